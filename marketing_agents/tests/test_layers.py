"""Dependencies point one way (docs/ARCHITECTURE.md): each app imports only from the apps below it.

    campaigns  <-  eventlog  <-  accounts  <-  webhooks  <-  orchestration  <-  realtime
              <-  the project (urls, asgi, serve, schema)

``marketing_agents``' shared modules (errors, logging, env, the Celery app and broker transport, redisconf)
sit under everything and import no app. The check reads every import in the source (at module level
or inside a function, where a cycle would otherwise hide), tests and migrations aside, and every
relation between models (a foreign key is a dependency even when written as a string):

    .venv/bin/python -m pytest marketing_agents/tests/test_layers.py
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

from django.apps import apps
from django.conf import settings

from orchestration.models import OrchestrationRun

LAYERS = ["campaigns", "eventlog", "accounts", "webhooks", "orchestration", "realtime"]
# marketing_agents modules any app may use
SHARED = {"errors", "logging", "env", "celery", "broker", "redisconf", "batching"}


def imports_of(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def sources(package: str) -> list[Path]:
    root = Path(settings.BASE_DIR) / package
    return [p for p in root.rglob("*.py") if "tests" not in p.parts and "migrations" not in p.parts]


def upward_imports() -> list[str]:
    found = []
    for rank, app in enumerate(LAYERS):
        above = set(LAYERS[rank + 1 :])
        for path in sources(app):
            for module in imports_of(path):
                top, _, rest = module.partition(".")
                if top in above:
                    found.append(f"{path.relative_to(settings.BASE_DIR)} imports {module} ({app} is below {top})")
                elif top == "marketing_agents" and rest and rest.split(".")[0] not in SHARED:
                    # ("from marketing_agents import x" is judged by its "marketing_agents.x" entry)
                    found.append(f"{path.relative_to(settings.BASE_DIR)} imports {module} (the project's top)")
    for name in SHARED:
        path = Path(settings.BASE_DIR) / "marketing_agents" / f"{name}.py"
        for module in imports_of(path):
            if module.partition(".")[0] in LAYERS:
                found.append(f"marketing_agents/{name}.py imports {module} (shared modules import no app)")
    return sorted(found)


def test_no_app_imports_an_app_above_it():
    assert upward_imports() == []


def test_the_check_sees_an_import_hidden_inside_a_function(tmp_path, monkeypatch):
    """The check itself can fail: a function-level import of realtime from campaigns is found."""
    package = tmp_path / "campaigns"
    package.mkdir()
    (package / "hidden.py").write_text("def f():\n    from realtime.fanout import get_fanout\n    return get_fanout\n")
    monkeypatch.setattr(settings, "BASE_DIR", tmp_path)
    (tmp_path / "marketing_agents").mkdir()
    for name in SHARED:
        (tmp_path / "marketing_agents" / f"{name}.py").write_text("")
    assert upward_imports() == [
        "campaigns/hidden.py imports realtime.fanout (campaigns is below realtime)",
        "campaigns/hidden.py imports realtime.fanout.get_fanout (campaigns is below realtime)",
    ]


def upward_relations(models=None) -> list[str]:
    """Relations from a model to a model of an app above its own (a string reference hides from imports)."""
    found = []
    for model in models if models is not None else apps.get_models():
        app = model._meta.app_label
        if app not in LAYERS:
            continue
        for field in model._meta.get_fields(include_hidden=True):
            if not field.is_relation or field.auto_created or field.related_model is None:
                continue
            target = field.related_model._meta.app_label
            if target in LAYERS and LAYERS.index(target) > LAYERS.index(app):
                found.append(f"{model._meta.label}.{field.name} -> {field.related_model._meta.label}")
    return sorted(found)


def test_no_model_points_at_a_model_of_an_app_above_it():
    assert upward_relations() == []


def test_the_relation_check_sees_a_foreign_key_pointing_up():
    """The check itself can fail: an event that named its run by a foreign key (as it once did) is found."""
    run = SimpleNamespace(name="run", is_relation=True, auto_created=False, related_model=OrchestrationRun)
    meta = SimpleNamespace(app_label="eventlog", label="eventlog.CampaignEvent", get_fields=lambda **_: [run])

    assert upward_relations([SimpleNamespace(_meta=meta)]) == [
        "eventlog.CampaignEvent.run -> orchestration.OrchestrationRun"
    ]
