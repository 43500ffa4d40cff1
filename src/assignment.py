"""The one linear assignment of the project: every Hungarian matching, FAQ's inner steps, warm starts and blind
starts call ``linear_assignment``.

Contract: the optimum of the same problem as ``scipy.optimize.linear_sum_assignment`` (same arguments, same
return: row indices ascending and the column of each), objective equal within float rounding. scipy stays the
reference in the tests.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["linear_assignment"]


def linear_assignment(cost, maximize=False):
    """Optimal assignment of a 2-D cost matrix (rows x columns, any float dtype; a torch tensor is read on the
    CPU). Returns (row_ind, col_ind), np.int64, as scipy's ``linear_sum_assignment``."""
    cost = np.asarray(cost.detach().cpu().numpy() if hasattr(cost, "detach") else cost)
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    return rows.astype(np.int64), cols.astype(np.int64)
