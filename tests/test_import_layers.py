"""The layer contract, held by a test rather than by care (see tests/import_layers.py)."""

import pytest

from tests.import_layers import ROOT, import_cycles, import_graph, layer_violations

pytestmark = pytest.mark.unit


def test_imports_flow_one_way():
    assert [str(v) for v in layer_violations(import_graph())] == []


def test_no_module_imports_itself_round_a_loop():
    assert import_cycles(import_graph()) == []


def _project_with(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(tmp_path)


def test_an_upward_import_is_reported_with_its_line(tmp_path):
    graph = _project_with(
        tmp_path,
        {
            "resources/__init__.py": "",
            "resources/vector_store.py": "import os\n\n\ndef f():\n    from assets.digest.signals import X\n",
            "assets/__init__.py": "",
            "assets/components/__init__.py": "",
            "assets/components/spec.py": "from assets.triage import tickets\n",
            "assets/digest/__init__.py": "",
            "assets/digest/signals.py": "from resources.vector_store import f\nfrom assets.triage.tickets import T\n",
            "assets/triage/__init__.py": "",
            "assets/triage/tickets.py": "from . import __init__\n",
            "sensors/__init__.py": "from ai_pipelines.cli import main\n",
            "ai_pipelines/__init__.py": "",
            "ai_pipelines/cli.py": "from sensors import x\nfrom evals.report import y\n",
            "evals/__init__.py": "",
            "evals/report.py": "from ai_pipelines.cli import main\n",
        },
    )
    assert sorted(str(v) for v in layer_violations(graph)) == [
        "ai_pipelines.cli:2 imports evals.report (upward import)",
        "assets.components.spec:1 imports assets.triage.tickets (upward import)",
        "assets.digest.signals:2 imports assets.triage.tickets (independent pipelines)",
        "resources.vector_store:5 imports assets.digest.signals (upward import)",
        "sensors:1 imports ai_pipelines.cli (upward import)",
    ]


def test_a_loop_is_reported_even_through_a_lazy_import(tmp_path):
    graph = _project_with(
        tmp_path,
        {
            "resources/__init__.py": "from resources.model import M\n",
            "resources/model.py": "def session():\n    from resources.session import S\n",
            "resources/session.py": "from resources import M\n",
            "resources/text.py": "",
        },
    )
    assert import_cycles(graph) == [["resources", "resources.model", "resources.session"]]


def test_the_graph_covers_every_package():
    modules = set(import_graph())
    assert {"resources.gateway.model", "assets.digest.signals", "sensors.jobs", "ai_pipelines.definitions"} <= modules
    assert all((ROOT / m.split(".")[0]).is_dir() for m in modules)
