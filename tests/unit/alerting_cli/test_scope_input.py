"""What operators type to name a silence's or a re-learn's scope is checked alike in the
CLI and the console (:mod:`streams.contract.scope`): a scope that can match nothing, or
something else than it says, is refused before anything is published."""

from __future__ import annotations

import pytest

from alerting.model import IncidentAction
from streams.cli.main import main
from streams.console.actions import ActionError
from streams.contract.scope import ScopeError, check_incident_type
from tests.unit.console.test_console_parts import _actions, _lifecycle


@pytest.mark.parametrize("text", ["toxicity", "harm", "Toxicity_Rate", "toxicity_rate:", ""])
def test_an_incident_type_that_no_incident_has_is_refused(text: str) -> None:
    with pytest.raises(ScopeError, match="not an incident type"):
        check_incident_type(text)


def test_incident_types_incidents_have_are_taken_stripped() -> None:
    assert check_incident_type(" toxicity_rate ") == "toxicity_rate"
    assert check_incident_type("critical_event:self_harm") == "critical_event:self_harm"
    assert check_incident_type("evaluation_score:judge/relevance") == (
        "evaluation_score:judge/relevance"
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--type", "toxicity"], "not an incident type: 'toxicity'"),
        (["--segment", "Tenant=acme"], "not a segment label"),
        (["--segment", "tenant"], "a segment is label=value"),
    ],
)
def test_silence_add_refuses_a_scope_that_matches_nothing(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["silence", "add", "--model", "m", "--duration", "2h", "--comment", "x"]
    with pytest.raises(SystemExit) as exit_:
        main([*base, *argv])
    assert exit_.value.code == 2
    assert error in capsys.readouterr().err


@pytest.mark.parametrize("narrow", [["--segment", "tenant=acme"], ["--version", "v2"]])
def test_relearn_add_refuses_an_incident_with_a_narrower_scope(
    narrow: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--incident`` names its own scope: a ``--segment`` or ``--version`` beside it was
    silently dropped, and the whole incident scope re-learned."""
    argv = ["relearn", "add", "--incident", "inc-1", "--reason", "x", *narrow]
    assert main(argv) == 2
    assert "give --incident (it names its scope) or --model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"model": "support bot"}, "not a model name"),
        ({"model": "m", "version": "v 2"}, "not a model name or version"),
        ({"model": "m", "segment": {"Tenant": "acme"}}, "not a segment label"),
        ({"model": "m", "incident_type": "toxicity"}, "not an incident type"),
    ],
)
def test_the_consoles_silence_form_refuses_what_the_cli_refuses(
    form: dict[str, object], error: str
) -> None:
    t, _ = _lifecycle()
    assert t.action == IncidentAction.TRIGGER
    actions, _, sent = _actions([t])
    fields: dict[str, object] = {
        "version": None,
        "segment": {},
        "incident_type": None,
        "duration": "2h",
        "comment": "maintenance",
        "by": "ops",
    }
    with pytest.raises(ActionError, match=error):
        actions.silence_record(**{**fields, **form})  # type: ignore[arg-type]
    assert sent.records == []
    made = actions.silence_record(**{**fields, "model": "m", "incident_type": " toxicity_rate "})  # type: ignore[arg-type]
    rec = actions.publish_silence(made)
    assert rec.silence.incident_type == "toxicity_rate"
