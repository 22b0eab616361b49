"""The support desk of "Lumen Notes": customers, orders, known issues and the help centre.

The triage agent answers tickets from this data through tools, so the tools carry the
business rules rather than the prompt: a refund is computed here (window, cap, approval
limit) against the ticket's own date, never the clock, so a re-run of an old ticket gives
the same answer. A toolbox built for one ticket is scoped to that ticket's customer:
another customer's record or order is refused as a tool error, because a reply must never
carry one customer's data to another, whatever the model was talked into asking for.

The tables are small CSV files read once per resource instance; a malformed row fails
loudly with its file and row, since a reply computed from a half-read table is worse than
none. Help-centre articles are embedded paragraph by paragraph into a Chroma collection
whose ids are derived from the content, so re-indexing unchanged articles embeds nothing.

A search is several round trips to Chroma and a BM25 pass, and a step's tickets ask the
same questions again and again (the agents' `search_help_centre` calls, the workers of
multi-part tickets): inside `memoized_searches()` each distinct query is searched once,
and a query already being searched by another thread is waited for rather than repeated.
The block is the caller's statement that the help centre does not change meanwhile (a
step that runs after `help_centre_index`); outside it every search reads the index anew.
"""

from __future__ import annotations

import csv
import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, TypeVar

from dagster import ConfigurableResource
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator

from resources.support.tools import FunctionTool, FunctionToolbox
from resources.vector_store import VectorStoreResource

CUSTOMERS_FILE = "customers.csv"
ORDERS_FILE = "orders.csv"
KNOWN_ISSUES_FILE = "known_issues.csv"
HELP_CENTRE_DIR = "help_centre"
MAX_SEARCH_RESULTS = 10
_LOAD_LOCK = threading.Lock()  # the tables of every instance; loading is rare and quick


class SupportDeskDataError(ValueError):
    """A data file is missing or malformed; the message names the file and the row."""


class SupportDeskError(ValueError):
    """A lookup that cannot be answered (unknown id, another customer's data, no ticket date)."""


def _as_date(value: object) -> object:
    """ISO dates, also as the date part of an ISO timestamp ("2025-03-14T09:30:00")."""
    if isinstance(value, str) and len(value.strip()) > 10 and value.strip()[10] in "T ":
        return value.strip()[:10]
    return value


class Customer(BaseModel):
    customer_id: str = Field(min_length=1)
    name: str
    email: str
    plan: str
    country: str
    signup_date: date

    _date = field_validator("signup_date", mode="before")(_as_date)


class Order(BaseModel):
    order_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    order_date: date
    product: str
    amount_eur: float = Field(ge=0)
    status: Literal["paid", "refunded", "failed"]

    _date = field_validator("order_date", mode="before")(_as_date)

    @field_validator("status", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class KnownIssue(BaseModel):
    issue_id: str = Field(min_length=1)
    title: str
    status: str
    workaround: str = ""
    article: str = Field(default="", description="Slug of the help-centre article about it, if any.")


class Article(BaseModel):
    slug: str
    title: str
    text: str = Field(description="The article's prose, without its title line.")

    def paragraphs(self) -> list[str]:
        """Blank-line separated blocks, whitespace folded; a heading joins the block it introduces."""
        out: list[str] = []
        heading = ""
        for block in self.text.split("\n\n"):
            text = " ".join(block.split())
            if not text:
                continue
            if text.startswith("#") and "\n" not in block.strip():
                heading = f"{heading} {text.lstrip('#').strip()}".strip() + ":"
                continue
            out.append(f"{heading} {text}".strip())
            heading = ""
        if heading:
            out.append(heading.rstrip(":"))
        return out


class HelpCentreHit(BaseModel):
    slug: str
    title: str
    excerpt: str = Field(description="The article's paragraph closest to the query.")
    distance: float = Field(description="Cosine distance of that paragraph to the query; lower is closer.")


class HelpCentreResults(BaseModel):
    hits: list[HelpCentreHit]


class CustomerAccount(BaseModel):
    customer: Customer
    orders: list[Order]


class RefundQuote(BaseModel):
    order_id: str
    eligible: bool
    amount_eur: float = Field(description="What may be refunded: 0 when not eligible, never more than was paid.")
    requires_approval: bool = Field(description="A supervisor must approve before this refund is promised.")
    reason: str


# The tools' arguments: the model reads these descriptions.
class SearchHelpCentreArgs(BaseModel):
    query: str = Field(min_length=1, description="What the customer needs help with, in a few words.")
    limit: int = Field(default=3, ge=1, le=MAX_SEARCH_RESULTS, description="How many articles to return.")


class LookupCustomerArgs(BaseModel):
    customer_id: str = Field(min_length=1, description="The ticket's customer id, e.g. C1001.")


class LookupOrderArgs(BaseModel):
    order_id: str = Field(min_length=1, description="An order id of the ticket's customer, e.g. O1001.")


class ComputeRefundArgs(BaseModel):
    order_id: str = Field(min_length=1, description="The order to refund, e.g. O1001.")
    amount_eur: float | None = Field(
        default=None, gt=0, description="Amount the customer asks for, in EUR; omit for the full amount paid."
    )


Row = TypeVar("Row", bound=BaseModel)


def read_table(path: Path, model: type[Row], key: Callable[[Row], str]) -> dict[str, Row]:
    """Rows of a CSV file by key; a missing column, an invalid value or a repeated key is an error naming file and row."""
    if not path.is_file():
        raise SupportDeskDataError(f"{path}: file not found")
    rows: dict[str, Row] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        required = [name for name, field in model.model_fields.items() if field.is_required()]
        missing = [name for name in required if name not in (reader.fieldnames or [])]
        if missing:
            raise SupportDeskDataError(f"{path}: header lacks column(s) {', '.join(missing)} (has {reader.fieldnames})")
        for line, raw in enumerate(reader, start=2):  # line 1 is the header
            if None in raw or any(v is None for v in raw.values()):
                raise SupportDeskDataError(f"{path}: row {line}: expected {len(reader.fieldnames or [])} fields")
            try:
                row = model.model_validate({k: v.strip() for k, v in raw.items() if k})
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise SupportDeskDataError(f"{path}: row {line}: {problems}") from None
            if key(row) in rows:
                raise SupportDeskDataError(f"{path}: row {line}: duplicate id {key(row)!r}")
            rows[key(row)] = row
    return rows


def read_article(path: Path) -> Article:
    text = path.read_text(encoding="utf-8")
    first, _, body = text.lstrip("\ufeff").partition("\n")
    if not first.startswith("# ") or not first[2:].strip():
        raise SupportDeskDataError(f"{path}: row 1: expected a '# Title' line, got {first[:60]!r}")
    if not body.strip():
        raise SupportDeskDataError(f"{path}: no text after the title")
    return Article(slug=path.stem, title=first[2:].strip(), text=body.strip())


def _chunk_id(slug: str, position: int, text: str) -> str:
    return f"{slug}:{position}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _parse_as_of(as_of: str) -> date:
    try:
        return date.fromisoformat(str(_as_date(as_of)))
    except ValueError:
        raise SupportDeskError(f"as_of must be an ISO date (YYYY-MM-DD), got {as_of!r}") from None


class SupportDeskResource(ConfigurableResource):
    """The support desk's data (a folder of CSV files and help-centre articles) and its tools."""

    data_dir: str = Field(description="Folder with customers.csv, orders.csv, known_issues.csv and help_centre/*.md.")
    vector_store: VectorStoreResource
    help_centre_collection: str = Field(
        default="help_centre", description="Chroma collection of the help-centre articles (a model hash is appended)."
    )
    refund_window_days: int = Field(
        default=30, ge=0, description="Days after the order date in which a refund is possible."
    )
    refund_limit_eur: float = Field(
        default=250.0,
        ge=0,
        description="No reply may promise a larger refund; larger refunds need a supervisor's approval.",
    )

    _tables: dict[str, Any] = PrivateAttr(default_factory=dict)
    _indexed: str = PrivateAttr(default="")
    # (query, limit) -> its hits, while a `memoized_searches()` block is open (None: no block).
    _searches: dict[tuple[str, int], Future] | None = PrivateAttr(default=None)
    _searches_depth: int = PrivateAttr(default=0)
    _searches_lock: Any = PrivateAttr(default_factory=threading.Lock)

    # --- data -------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return Path(self.data_dir) / name

    def _cached(self, name: str, load: Callable[[], Any]) -> Any:
        if name not in self._tables:
            with _LOAD_LOCK:
                if name not in self._tables:
                    self._tables[name] = load()
        return self._tables[name]

    def _customers(self) -> dict[str, Customer]:
        return self._cached(
            "customers", lambda: read_table(self._path(CUSTOMERS_FILE), Customer, lambda c: c.customer_id)
        )

    def _orders(self) -> dict[str, Order]:
        return self._cached("orders", lambda: read_table(self._path(ORDERS_FILE), Order, lambda o: o.order_id))

    def known_issues(self) -> list[KnownIssue]:
        issues = self._cached(
            "issues", lambda: read_table(self._path(KNOWN_ISSUES_FILE), KnownIssue, lambda i: i.issue_id)
        )
        return list(issues.values())

    def articles(self) -> list[Article]:
        def load() -> list[Article]:
            folder = self._path(HELP_CENTRE_DIR)
            if not folder.is_dir():
                raise SupportDeskDataError(f"{folder}: folder not found")
            return [read_article(p) for p in sorted(folder.glob("*.md"))]

        return self._cached("articles", load)

    @staticmethod
    def _find(table: dict[str, Row], key: str) -> Row | None:
        """Exact id first, then ignoring case and surrounding space (models write "o1001 ")."""
        wanted = key.strip()
        return table.get(wanted) or next((v for k, v in table.items() if k.casefold() == wanted.casefold()), None)

    def customers(self) -> list[Customer]:
        """Every customer; the output guardrails look for the others' data in a reply."""
        return list(self._customers().values())

    def customer(self, customer_id: str) -> Customer:
        found = self._find(self._customers(), customer_id)
        if found is None:
            raise SupportDeskError(f"customer {customer_id} not found")
        return found

    def orders_of(self, customer_id: str) -> list[Order]:
        customer = self.customer(customer_id)
        return sorted(
            (o for o in self._orders().values() if o.customer_id == customer.customer_id), key=lambda o: o.order_date
        )

    def order(self, order_id: str) -> Order:
        found = self._find(self._orders(), order_id)
        if found is None:
            raise SupportDeskError(f"order {order_id} not found")
        return found

    def quote_refund(self, order_id: str, as_of: str, amount_eur: float | None = None) -> RefundQuote:
        """What may be refunded for an order on the ticket's date `as_of`; `amount_eur` is what the customer asks for."""
        order = self.order(order_id)
        day = _parse_as_of(as_of)

        def refuse(reason: str) -> RefundQuote:
            return RefundQuote(
                order_id=order.order_id, eligible=False, amount_eur=0.0, requires_approval=False, reason=reason
            )

        if order.status != "paid":
            return refuse(f"order is {order.status}, not paid: nothing to refund")
        age = (day - order.order_date).days
        if age < 0:
            return refuse(f"order date {order.order_date} is after the ticket date {day}")
        if age > self.refund_window_days:
            return refuse(
                f"ordered {order.order_date}, {age} days before {day}: refunds are possible within {self.refund_window_days} days"
            )
        amount = round(order.amount_eur if amount_eur is None else min(amount_eur, order.amount_eur), 2)
        capped = amount_eur is not None and amount_eur > order.amount_eur
        approval = amount > self.refund_limit_eur
        reason = f"paid {order.amount_eur:.2f} EUR on {order.order_date}, {age} days before {day}: within {self.refund_window_days} days"
        if capped:
            reason += f"; {amount_eur:.2f} EUR asked, capped at the amount paid"
        if approval:
            reason += f"; above {self.refund_limit_eur:.2f} EUR, a supervisor must approve"
        return RefundQuote(
            order_id=order.order_id, eligible=True, amount_eur=amount, requires_approval=approval, reason=reason
        )

    # --- help centre -----------------------------------------------------------------

    def collection_name(self) -> str:
        """Vectors of different embedding models live in different collections."""
        model = self.vector_store.embeddings.model_id
        return f"{self.help_centre_collection}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"

    def _chunks(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Per paragraph id: the text embedded (title, then paragraph) and its metadata."""
        chunks = {}
        for article in self.articles():
            for position, paragraph in enumerate(article.paragraphs()):
                chunks[_chunk_id(article.slug, position, paragraph)] = (
                    f"{article.title}\n{paragraph}",
                    {"slug": article.slug, "title": article.title, "position": position},
                )
        return chunks

    def index_help_centre(self) -> str:
        """Embed new or changed paragraphs, drop stale ones; returns the index version (articles + embedding model)."""
        chunks = self._chunks()
        name = self.collection_name()
        with self.vector_store.writing():
            existing = self.vector_store.ids(name)
            new = sorted(chunks.keys() - existing)
            self.vector_store.upsert(
                name, ids=new, documents=[chunks[i][0] for i in new], metadatas=[chunks[i][1] for i in new]
            )
            self.vector_store.delete(name, sorted(existing - chunks.keys()))
        digest = hashlib.sha256(self.vector_store.embeddings.model_id.encode())
        for chunk_id in sorted(chunks):
            digest.update(chunk_id.encode())
        self._indexed = digest.hexdigest()[:16]
        return self._indexed

    def search_help_centre(self, query: str, limit: int = 3) -> list[HelpCentreHit]:
        """The `limit` articles that rank best for the query (the index's retrieval mode), each with its best
        paragraph (indexes on first use)."""
        return self.search_help_centre_many([query], limit)[0]

    def search_help_centre_many(self, queries: Sequence[str], limit: int = 3) -> list[list[HelpCentreHit]]:
        """`search_help_centre` for many queries at once: one embedding request and one Chroma
        query for all of them, instead of a round trip each (a run's tickets are searched together).
        Inside `memoized_searches()`, only the queries not searched yet in the block are."""
        if not queries:
            return []
        if any(not q.strip() for q in queries):
            raise SupportDeskError("query is empty")
        limit = max(1, min(limit, MAX_SEARCH_RESULTS))
        owned: dict[tuple[str, int], Future] = {}  # the searches this call makes for the block
        wanted: list[Future] = []
        with self._searches_lock:
            memo = self._searches
            if memo is not None:
                for query in queries:
                    if (query, limit) not in memo:
                        memo[(query, limit)] = owned[(query, limit)] = Future()
                wanted = [memo[(query, limit)] for query in queries]
        if memo is None:
            return self._search(list(queries), limit)
        if owned:
            self._search_for_block(memo, owned, limit)
        return [list(future.result()) for future in wanted]

    def _search_for_block(
        self, memo: dict[tuple[str, int], Future], owned: dict[tuple[str, int], Future], limit: int
    ) -> None:
        """Search the queries this call took on, and hand each result to whoever waits for it. A
        failed search is not remembered: the next caller in the block tries again."""
        try:
            found = self._search([query for query, _ in owned], limit)
        except BaseException as exc:
            with self._searches_lock:
                for key, future in owned.items():
                    if memo.get(key) is future:
                        del memo[key]
            for future in owned.values():
                future.set_exception(exc)
            raise
        for future, hits in zip(owned.values(), found):
            future.set_result(hits)

    @contextmanager
    def memoized_searches(self) -> Iterator[None]:
        """Within the block (on every thread), each distinct (query, limit) is searched once; the
        caller vouches that the help centre does not change until the block ends."""
        with self._searches_lock:
            if self._searches_depth == 0:
                self._searches = {}
            self._searches_depth += 1
        try:
            yield
        finally:
            with self._searches_lock:
                self._searches_depth -= 1
                if self._searches_depth == 0:
                    self._searches = None

    def _search(self, queries: list[str], limit: int) -> list[list[HelpCentreHit]]:
        """Each query's best `limit` articles, each with its best paragraph (indexes on first use)."""
        if not self._indexed:
            self.index_help_centre()
        results = []
        for hits in self.vector_store.query(self.collection_name(), queries, n_results=limit * 4):
            best: dict[str, HelpCentreHit] = {}
            for hit in hits:  # best first: keep each article's best paragraph
                slug = str(hit.metadata.get("slug", ""))
                if slug and slug not in best:
                    title = str(hit.metadata.get("title", ""))
                    excerpt = hit.text.removeprefix(f"{title}\n")
                    best[slug] = HelpCentreHit(
                        slug=slug, title=title, excerpt=excerpt, distance=round(float(hit.distance or 0.0), 4)
                    )
            results.append(list(best.values())[:limit])
        return results

    # --- tools -----------------------------------------------------------------------

    def toolbox(self, customer_id: str | None = None, as_of: str = "") -> FunctionToolbox:
        """The agent's tools for one ticket: scoped to `customer_id` when given, refunds as of the ticket's date."""
        scope: str | None = None
        if customer_id is not None:  # an unknown customer is still a scope: every lookup is then refused
            known = self._find(self._customers(), customer_id)
            scope = known.customer_id if known is not None else customer_id.strip()

        def own_order(order_id: str) -> Order:
            order = self.order(order_id)
            if scope is not None and order.customer_id != scope:
                raise SupportDeskError(f"order {order.order_id} does not belong to this ticket's customer")
            return order

        def search(args: SearchHelpCentreArgs) -> HelpCentreResults:
            return HelpCentreResults(hits=self.search_help_centre(args.query, args.limit))

        def lookup_customer(args: LookupCustomerArgs) -> CustomerAccount:
            customer = self.customer(args.customer_id)
            if scope is not None and customer.customer_id != scope:
                raise SupportDeskError(f"customer {args.customer_id} is not this ticket's customer")
            return CustomerAccount(customer=customer, orders=self.orders_of(customer.customer_id))

        def lookup_order(args: LookupOrderArgs) -> Order:
            return own_order(args.order_id)

        def compute_refund(args: ComputeRefundArgs) -> RefundQuote:
            if not as_of:
                raise SupportDeskError("no ticket date: refunds are computed as of the ticket's date")
            return self.quote_refund(own_order(args.order_id).order_id, as_of, args.amount_eur)

        return FunctionToolbox(
            [
                FunctionTool(
                    "search_help_centre",
                    "Search the Lumen Notes help centre; returns the closest articles (slug, title, excerpt).",
                    SearchHelpCentreArgs,
                    search,
                ),
                FunctionTool(
                    "lookup_customer",
                    "The ticket's customer: name, email, plan, country, signup date and their orders.",
                    LookupCustomerArgs,
                    lookup_customer,
                ),
                FunctionTool(
                    "lookup_order",
                    "One order of the ticket's customer: date, product, amount paid in EUR and status (paid, refunded, failed).",
                    LookupOrderArgs,
                    lookup_order,
                ),
                FunctionTool(
                    "compute_refund",
                    f"Whether an order can be refunded as of the ticket's date and how much: paid orders only, within "
                    f"{self.refund_window_days} days, never more than was paid; above {self.refund_limit_eur:.0f} EUR "
                    "it needs a supervisor's approval (requires_approval) and must not be promised.",
                    ComputeRefundArgs,
                    compute_refund,
                ),
            ]
        )


__all__ = [
    "Article",
    "ComputeRefundArgs",
    "Customer",
    "CustomerAccount",
    "HelpCentreHit",
    "HelpCentreResults",
    "KnownIssue",
    "LookupCustomerArgs",
    "LookupOrderArgs",
    "Order",
    "RefundQuote",
    "SearchHelpCentreArgs",
    "SupportDeskDataError",
    "SupportDeskError",
    "SupportDeskResource",
]
