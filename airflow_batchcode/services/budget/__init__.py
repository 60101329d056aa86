"""The request budget of a service account, shared by every request on its connection.

A service account has a rate (requests per second) and a quota (requests per quota window: ABS
allows 1/s and 10,000 a day). Every process that calls the service on a connection draws from
one :class:`~.budget.Budget`: per process by default, or shared by every worker and triggerer
through Redis when the connection names a ``budget_url``. A spent window is waited out, never
an error. The :mod:`.planner` spaces the status polls of open operations so that they leave a
reserve of each window to creates, uploads and downloads.

No Airflow imports here: the budget is usable from any client.
"""

from __future__ import annotations

from airflow_batchcode.services.budget.budget import Budget, BudgetStatus, budget_for
from airflow_batchcode.services.budget.settings import BudgetSettings, QuotaSettings
from airflow_batchcode.services.budget.window import QuotaWindow

__all__ = ["Budget", "BudgetSettings", "BudgetStatus", "QuotaSettings", "QuotaWindow", "budget_for"]
