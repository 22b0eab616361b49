"""The support desk's data and the agent's tools on small fixture data: the refund rules
(window, cap, approval limit, unpaid orders, the ticket's date), the per-customer scope
that keeps one customer's data out of another's reply, errors returned to the model
rather than raised, and help-centre search over a real Chroma collection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resources import EmbeddingsResource, VectorStoreResource
from resources.support.support_desk import SupportDeskDataError, SupportDeskError, SupportDeskResource
from tests.conftest import write_desk
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration  # help-centre search embeds over the fake server into Chroma on disk

SUPPORT_DESK_DIR = (
    Path(__file__).parent.parent / "resources" / "support" / "desk"
)  # resources.pipeline_config.SUPPORT_DESK_DIR, without importing every asset


def make_desk(folder: Path, llm: FakeOpenAI, **options) -> SupportDeskResource:
    """Fixture data in `folder`/desk, embedded by the fake server into Chroma under `folder`/chroma."""
    vector_store = VectorStoreResource(
        embeddings=EmbeddingsResource(base_url=llm.base_url, model="fake-embedder"), persist_dir=str(folder / "chroma")
    )
    return SupportDeskResource(data_dir=str(write_desk(folder / "desk")), vector_store=vector_store, **options)


def reread(desk: SupportDeskResource) -> SupportDeskResource:
    """A new instance over the same files and store: it reads the tables again."""
    return SupportDeskResource(data_dir=desk.data_dir, vector_store=desk.vector_store)


@pytest.fixture
def desk(tmp_path: Path, llm: FakeOpenAI) -> SupportDeskResource:
    return make_desk(tmp_path, llm)


def result(toolbox, name: str, arguments: dict) -> dict:
    answer = toolbox.call(name, arguments)
    assert answer.ok, answer.content
    return json.loads(answer.content)


def test_refund_inside_the_window_is_the_amount_paid(desk):
    tools = desk.toolbox("C1", as_of="2025-03-20")
    quote = result(tools, "compute_refund", {"order_id": "O1"})
    assert quote == {**quote, "order_id": "O1", "eligible": True, "amount_eur": 90.0, "requires_approval": False}
    assert desk.quote_refund("O1", "2025-03-31").eligible  # day 30 is still inside
    assert desk.quote_refund("O1", "2025-03-31T16:45:00Z").eligible  # a ticket's timestamp counts by its date


def test_refund_outside_the_window_is_refused(desk):
    quote = result(desk.toolbox("C1", as_of="2025-04-01"), "compute_refund", {"order_id": "O1"})
    assert quote["eligible"] is False and quote["amount_eur"] == 0.0 and "31 days" in quote["reason"]
    assert desk.quote_refund("O1", "2025-02-01").eligible is False  # a ticket before the order


def test_refund_above_the_limit_requires_approval_and_never_exceeds_the_amount_paid(desk, tmp_path, llm):
    tools = desk.toolbox("C1", as_of="2025-03-10")
    full = result(tools, "compute_refund", {"order_id": "O2"})
    assert full["eligible"] and full["amount_eur"] == 380.0 and full["requires_approval"] is True
    partial = result(tools, "compute_refund", {"order_id": "O2", "amount_eur": 100})
    assert partial["amount_eur"] == 100.0 and partial["requires_approval"] is False
    greedy = result(tools, "compute_refund", {"order_id": "O1", "amount_eur": 500})
    assert greedy["amount_eur"] == 90.0 and "capped" in greedy["reason"]
    lenient = make_desk(tmp_path / "lenient", llm, refund_limit_eur=500)
    assert lenient.quote_refund("O2", "2025-03-10").requires_approval is False


def test_orders_not_paid_are_not_refundable(desk):
    tools = desk.toolbox("C1", as_of="2025-03-10")
    for order_id, status in (("O3", "failed"), ("O4", "refunded")):
        quote = result(tools, "compute_refund", {"order_id": order_id})
        assert quote["eligible"] is False and quote["amount_eur"] == 0.0 and status in quote["reason"]


def test_refunds_need_the_tickets_date(desk):
    answer = desk.toolbox("C1").call("compute_refund", {"order_id": "O1"})
    assert not answer.ok and answer.error_kind == "tool_error" and "ticket's date" in answer.content
    with pytest.raises(SupportDeskError, match="ISO date"):
        desk.quote_refund("O1", "last Tuesday")


def test_a_scoped_toolbox_refuses_another_customers_data(desk):
    tools = desk.toolbox("C1", as_of="2025-03-10")
    assert result(tools, "lookup_order", {"order_id": "o1 "})["order_id"] == "O1"  # ids as models write them
    account = result(tools, "lookup_customer", {"customer_id": "C1"})
    assert account["customer"]["name"] == "Ada Lovelace" and [o["order_id"] for o in account["orders"]] == [
        "O1",
        "O2",
        "O3",
        "O4",
    ]
    for name, arguments in (("lookup_order", {"order_id": "O5"}), ("compute_refund", {"order_id": "O5"})):
        answer = tools.call(name, arguments)
        assert not answer.ok and answer.error_kind == "tool_error"
        assert "order O5 does not belong to this ticket's customer" in answer.content and "Bob" not in answer.content
    other = tools.call("lookup_customer", {"customer_id": "C2"})
    assert not other.ok and "not this ticket's customer" in other.content and "bob@" not in other.content
    # A ticket from an unknown customer is still scoped: nobody's data comes back.
    stranger = desk.toolbox("C404", as_of="2025-03-10")
    assert not stranger.call("lookup_order", {"order_id": "O1"}).ok
    assert not stranger.call("lookup_customer", {"customer_id": "C1"}).ok
    # Unscoped (an operator's toolbox) sees every customer.
    assert result(desk.toolbox(as_of="2025-03-10"), "lookup_order", {"order_id": "O5"})["customer_id"] == "C2"


def test_unknown_tools_and_bad_arguments_come_back_as_results(desk):
    tools = desk.toolbox("C1", as_of="2025-03-10")
    unknown = tools.call("issue_refund", {"order_id": "O1"})
    assert not unknown.ok and unknown.error_kind == "unknown_tool" and "compute_refund" in unknown.content
    for arguments in ({}, {"order_id": ""}, '{"order_id": ', "[1, 2]", {"order_id": "O1", "amount_eur": -5}):
        answer = tools.call("compute_refund", arguments)
        assert not answer.ok and answer.error_kind == "invalid_arguments", (arguments, answer)
    missing = tools.call("lookup_order", {"order_id": "O999"})
    assert not missing.ok and missing.error_kind == "tool_error" and "O999 not found" in missing.content
    specs = {s.name: s for s in tools.specs()}
    assert set(specs) == {"search_help_centre", "lookup_customer", "lookup_order", "compute_refund"}
    assert specs["compute_refund"].parameters["properties"]["order_id"]["description"]


def test_help_centre_search_finds_the_right_article_and_reindexing_is_idempotent(desk, llm):
    hits = result(desk.toolbox("C1"), "search_help_centre", {"query": "I forgot my password", "limit": 2})["hits"]
    assert hits[0]["slug"] == "reset-password" and hits[0]["title"] == "Reset your password" and len(hits) == 2
    assert desk.search_help_centre("refund of my order within 30 days")[0].slug == "refund-policy"
    # A heading joins the paragraph it introduces; paragraphs are what is stored and returned.
    policy = next(a for a in desk.articles() if a.slug == "refund-policy")
    assert policy.paragraphs()[1].startswith("How to ask: Write to support")

    version = desk.index_help_centre()
    requests = llm.embedding_requests
    assert desk.index_help_centre() == version and llm.embedding_requests == requests  # nothing re-embedded

    (Path(desk.data_dir) / "help_centre" / "export-notes.md").unlink()
    fresh = reread(desk)
    assert fresh.index_help_centre() != version
    assert not any(i.startswith("export-notes:") for i in desk.vector_store.ids(fresh.collection_name()))
    assert all(h.slug != "export-notes" for h in fresh.search_help_centre("export notebooks as Markdown", 3))


def test_malformed_data_names_the_file_and_row(tmp_path, llm):
    desk = make_desk(tmp_path, llm)
    orders = Path(desk.data_dir) / "orders.csv"
    orders.write_text(orders.read_text() + "O6,C2,2025-13-01,Plus yearly,90.00,paid\n")
    with pytest.raises(SupportDeskDataError, match=r"orders\.csv: row 7: order_date"):
        desk.order("O1")
    orders.write_text("order_id,customer_id,order_date,product,amount_eur,status\nO1,C1,2025-03-01,Plus,90,pending\n")
    with pytest.raises(SupportDeskDataError, match=r"orders\.csv: row 2: status"):
        reread(desk).order("O1")
    orders.write_text("order_id,customer_id,amount_eur\nO1,C1,90\n")
    with pytest.raises(
        SupportDeskDataError, match=r"orders\.csv: header lacks column\(s\) order_date, product, status"
    ):
        reread(desk).order("O1")
    (Path(desk.data_dir) / "help_centre" / "broken.md").write_text("No title here\n\ntext")
    with pytest.raises(SupportDeskDataError, match=r"broken\.md: row 1"):
        desk.articles()


def test_tables_are_read_once_per_instance(desk):
    assert desk.customer("C2").name == "Bob Martin"
    (Path(desk.data_dir) / "customers.csv").write_text("customer_id,name,email,plan,country,signup_date\n")
    assert desk.customer("C2").name == "Bob Martin"
    with pytest.raises(SupportDeskError, match="customer C2 not found"):
        reread(desk).customer("C2")


@pytest.mark.skipif(not (SUPPORT_DESK_DIR / "orders.csv").exists(), reason="bundled support-desk data not present")
def test_the_bundled_data_reads_cleanly(desk):
    bundled = SupportDeskResource(data_dir=str(SUPPORT_DESK_DIR), vector_store=desk.vector_store)
    orders = [
        bundled.order(line.split(",")[0])
        for line in (SUPPORT_DESK_DIR / "orders.csv").read_text().splitlines()[1:]
        if line
    ]
    assert orders and all(bundled.customer(o.customer_id) for o in orders)
    articles = {a.slug for a in bundled.articles()}
    assert articles and all(a.paragraphs() for a in bundled.articles())
    assert all(not i.article or i.article in articles for i in bundled.known_issues())


def test_the_resource_serves_an_asset(desk):
    from dagster import asset, materialize

    @asset
    def refund_quote(support_desk: SupportDeskResource) -> dict:
        return support_desk.quote_refund("O1", "2025-03-20").model_dump()

    result = materialize([refund_quote], resources={"support_desk": desk})
    assert result.success and result.output_for_node("refund_quote")["amount_eur"] == 90.0
