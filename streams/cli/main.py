"""The ``sentinel`` command line.

Subcommands:
  run                  start the worker (and a local broker when none is configured)
  kafka up|down|status manage the local single-node KRaft broker (fetch: only download jars)
  config               validate the configuration and print it
  simulate             realistic traffic with injected failures (to Kafka or a file)
  replay               the pipeline over a JSONL file, without Kafka
  schema               write the event JSON Schemas
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kafka.errors import KafkaError
from pydantic import ValidationError

from alerting.policy import ConfigError, error_text
from streams.cli.common import say, settings_of
from streams.devtools.broker import LocalBroker
from streams.devtools.errors import BrokerError
from streams.devtools.kafka_dist import fetch_kafka
from streams.kafka.security import KafkaLoginError
from streams.settings import LocalBrokerSettings, Settings

Handler = Callable[[argparse.Namespace], int]


def _local_broker(args: argparse.Namespace, settings: Settings) -> LocalBroker:
    overrides = {
        key: value
        for key, value in {
            "port": getattr(args, "port", None),
            "controller_port": getattr(args, "controller_port", None),
            "data_dir": getattr(args, "data_dir", None),
        }.items()
        if value is not None
    }
    local = LocalBrokerSettings.model_validate({**settings.local_broker.model_dump(), **overrides})
    return LocalBroker(local, log=say)


def cmd_kafka(args: argparse.Namespace) -> int:
    """``sentinel kafka up|down|status|fetch``."""
    settings = settings_of(args)
    broker = _local_broker(args, settings)
    if args.action == "fetch":
        libs = fetch_kafka(
            settings.local_broker.kafka_version, settings.local_broker.cache_dir, say
        )
        print(f"Kafka {settings.local_broker.kafka_version} jars in {libs}")
        return 0
    if args.action == "up":
        status = broker.up()
        print(f"Kafka broker {status.describe()}")
        print(f"  use it with: SENTINEL_BROKER={broker.url}")
        if broker.secured:
            security = broker.client_security()
            prefix = "SENTINEL_KAFKA__SECURITY__"
            print(f"    {prefix}SECURITY_PROTOCOL={security.security_protocol}")
            print(f"    {prefix}SASL_MECHANISM={security.sasl_mechanism}")
            print(f"    {prefix}SASL_USERNAME={security.sasl_username}")
            print(f"    {prefix}SSL_CAFILE={security.ssl_cafile}")
            if security.ssl_certfile is not None:
                print(f"    {prefix}SSL_CERTFILE={security.ssl_certfile}")
                print(f"    {prefix}SSL_KEYFILE={security.ssl_keyfile}")
            print(f"    {prefix}SASL_PASSWORD=<the local_broker.sasl_password>")
        return 0
    if args.action == "down":
        stopped = broker.down()
        print("Kafka broker stopped" if stopped else "Kafka broker was not running")
        return 0
    status = broker.status()
    print(f"Kafka broker {status.describe()}")
    return 0 if status.running and status.accepting else 3


def cmd_config(args: argparse.Namespace) -> int:
    """``sentinel config``: validate and print the effective configuration, the alerting
    policy and playbooks it names included (they are read as the worker reads them)."""
    from alerting.playbooks import load_playbooks
    from alerting.policy import load_policy

    settings = settings_of(args)
    load_policy(settings.detection.alerting_policy)
    load_playbooks(settings.detection.playbooks_dir)
    print(settings.model_dump_json(indent=2))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """``sentinel schema --out DIR``: write the JSON Schema files of the event contract."""
    from streams.contract.schema import write_schemas

    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file: give a directory for the schema files")
    for path in write_schemas(args.out):
        print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``sentinel run``: the streaming worker, on the configured or a local broker."""
    settings = settings_of(args)
    broker_url = settings.kafka.broker
    if not broker_url:
        broker = _local_broker(args, settings)
        say(
            "no broker configured (kafka.broker in the config file, or SENTINEL_BROKER): "
            f"using a local Kafka broker on {broker.bootstrap}, data in {broker.data_dir}"
        )
        broker.up()
        broker_url = broker.url
        settings = broker.login_settings(settings)
        say("the local broker keeps running after the worker stops: 'sentinel kafka down'")
    from streams.runtime.worker import run_worker

    return run_worker(settings, broker_url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentinel",
        description="Catch AI failures in production from Kafka event streams.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: $SENTINEL_CONFIG or config/sentinel.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the worker (starts a local broker if none is set)")
    run.set_defaults(handler=cmd_run)

    kafka = sub.add_parser("kafka", help="manage the local single-node Kafka broker")
    kafka.add_argument("action", choices=["up", "down", "status", "fetch"])
    kafka.add_argument("--port", type=int, help="client port (default from config: 9092)")
    kafka.add_argument("--controller-port", type=int, help="KRaft controller port (9093)")
    kafka.add_argument("--data-dir", type=Path, help="broker data directory")
    kafka.set_defaults(handler=cmd_kafka)

    config = sub.add_parser("config", help="validate the configuration and print it")
    config.set_defaults(handler=cmd_config)

    from streams.cli.replay import add_replay_arguments, run_replay
    from streams.cli.simulate import add_simulate_arguments, run_simulate

    simulate = sub.add_parser("simulate", help="publish or write simulated traffic")
    add_simulate_arguments(simulate)
    simulate.set_defaults(handler=run_simulate)

    replay = sub.add_parser(
        "replay",
        help="run the pipeline over a JSONL file, or over Kafka history (--from/--to); "
        "replayed incidents never page",
    )
    add_replay_arguments(replay)
    replay.set_defaults(handler=run_replay)

    schema = sub.add_parser("schema", help="write JSON Schema files for the events")
    schema.add_argument(
        "--out", type=Path, default=Path("schemas"), help="directory (default: ./schemas)"
    )
    schema.set_defaults(handler=cmd_schema)

    from streams.cli.investigate import register as register_investigation
    from streams.cli.ops import register as register_operations
    from streams.console import cli as console_cli

    register_operations(sub)
    register_investigation(sub)
    console_cli.register(sub)
    _config_everywhere(parser)
    return parser


def validation_text(exc: ValidationError) -> str:
    """A pydantic error as one line: what was invalid, where, and the value given."""
    parts = []
    for e in exc.errors():
        if not e["loc"]:  # a check of the whole: its message names what it is about
            parts.append(error_text(e))
            continue
        given = repr(e.get("input"))
        parts.append(f"{error_text(e)} (given {given[:60] + '...' if len(given) > 60 else given})")
    return f"invalid {exc.title}: " + "; ".join(parts)


def _config_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` after the subcommand as well as before it (each subcommand's
    parser, nested ones too, unless it gives ``--config`` a meaning of its own)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if "--config" not in child._option_string_actions:
                    child.add_argument(
                        "--config", type=Path, default=argparse.SUPPRESS, help="TOML config file"
                    )
                # the innermost parser the arguments reached: it reports what is left over
                child.set_defaults(command_parser=child)
                _config_everywhere(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # `replay --inptu x`: replay's usage and error, not the top level's
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extras)}")
    handler: Handler = args.handler
    try:
        return handler(args)
    except ValidationError as exc:
        say(validation_text(exc))
        return 2
    except (ConfigError, ValueError, OverflowError) as exc:
        say(str(exc))
        return 2
    except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
        say(f"{exc.strerror}: {exc.filename}")
        return 2
    except PermissionError as exc:
        say(f"{exc.strerror}: {exc.filename}")
        return 1
    except BrokerError as exc:
        say(f"Kafka broker: {exc}")
        return 1
    except KafkaLoginError as exc:
        say(f"Kafka login refused: {exc}")
        return 1
    except (KafkaError, TimeoutError) as exc:
        # An unreachable broker: one line, as for every other bad input, not a traceback.
        name, detail = type(exc).__name__, str(exc)
        say(f"Kafka: {detail if detail.startswith(name) else f'{name}: {detail}'}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
