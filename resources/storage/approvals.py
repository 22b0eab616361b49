"""The approvals log: every decision a person takes before something irreversible.

The digest's publication and the support replies both wait for a person; both keep the
decision, either way, with who took it, when and why, in one store, so a decision is
found again after a crash and is never applied twice.
"""

from pydantic import BaseModel

from resources.pipeline_config import PipelineConfig
from resources.storage.state_store import StateStore


class Approval(BaseModel):
    summaries_version: str
    approver: str
    decision: str
    reason: str
    decided_at: str


class ApprovalLog:
    """Every approval and rejection, in `<output_dir>/approvals.sqlite` (or the state database).

    One mechanism for every decision a person takes before something irreversible: the
    digest's publication (table `approvals`) and support replies (table `reply_approvals`).
    The first field of `model` is what was decided on (a version), the rest as `Approval`.
    """

    def __init__(self, pipeline: PipelineConfig, table: str = "approvals", model: type[BaseModel] = Approval):
        self._table, self._model = table, model
        self._subject = next(iter(model.model_fields))
        columns = ", ".join(f"{name} text" for name in model.model_fields)
        self._db = StateStore(pipeline.state_location("approvals"), f"create table if not exists {table} ({columns});")

    def record(self, approval: BaseModel) -> None:
        values = tuple(approval.model_dump().values())
        self._db.execute(f"insert into {self._table} values ({', '.join('?' * len(values))})", values)

    def _rows(self, where: str = "", params: tuple = ()) -> list:
        rows = self._db.fetchall(f"select * from {self._table} {where} order by decided_at", params)
        return [self._model(**dict(zip(self._model.model_fields, row))) for row in rows]

    def approval_of(self, version: str):
        """The first approval of `version`, if it was approved before."""
        rows = self._rows(f"where {self._subject} = ? and decision = 'approve'", (version,))
        return rows[0] if rows else None

    def decision_of(self, version: str):
        """The first decision either way on `version`, if there was one."""
        rows = self._rows(f"where {self._subject} = ?", (version,))
        return rows[0] if rows else None

    def all(self) -> list:
        return self._rows()
