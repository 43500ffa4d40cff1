"""Kernels, HSIC and CKA of one pair of representations, as the paper defines them.

- HSIC is the biased estimator ``sum(HKH * HLH)`` with ``H = I - 11^T / n``; CKA is
  ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.
- The RBF kernel uses squared distances built from the Gram matrix; with ``sigma=None`` the bandwidth is
  ``sqrt(median of the nonzero squared distances)``, ``torch.median`` semantics (the lower middle value),
  computed separately for every set of rows it is given.
- ``centered_scaled_corr_rbf`` is the QAP input: the centred RBF kernel scaled to unit Frobenius norm.

Results keep the dtype and device of the inputs (``device`` moves them first when given).
"""
import torch


def to_device(x, device):
    """x moved to device, or x itself when device is None."""
    return x if device is None else x.to(device)


def centering(K, device=None):
    """HKH with H = I - 11^T/n, for an n x n matrix K (or a batch b x n x n).

    Computed as K minus row and column means plus the grand mean, which equals H @ K @ H without the
    two n^3 products.
    """
    K = to_device(K, device)
    return (K - K.mean(dim=-1, keepdim=True) - K.mean(dim=-2, keepdim=True)
            + K.mean(dim=(-2, -1), keepdim=True))


def sq_dists(X):
    """Squared distances of the rows of X (n x d) from the Gram matrix, exactly as the paper forms them."""
    GX = X @ X.T
    d = torch.diagonal(GX)
    return d - GX + (d - GX).T  # [i, j] = (G_jj - G_ij) + (G_ii - G_ji): symmetric, zero diagonal


def rbf(X, sigma=None):
    """RBF kernel exp(-||x_i - x_j||^2 / (2 sigma^2)) of the rows of X (n x d).

    sigma=None: sigma = sqrt(lower median of the nonzero squared distances of this X).
    """
    KX = sq_dists(X)
    if sigma is None:
        sigma = torch.sqrt(torch.median(KX[KX != 0]))  # torch.median: the lower of two middle values
    return torch.exp(KX * (-0.5 / (sigma * sigma)))


def kernel_HSIC(X, Y, device=None, sigma=None):
    """Biased HSIC of the RBF kernels of X and Y (each with its own median sigma when sigma is None)."""
    X, Y = to_device(X, device), to_device(Y, device)
    return torch.sum(centering(rbf(X, sigma)) * centering(rbf(Y, sigma)))


def kernel_CKA(X, Y, device=None, sigma=None):
    """RBF-kernel CKA of X (n x d1) and Y (n x d2), rows paired."""
    hsic = kernel_HSIC(X, Y, device, sigma)
    var1 = torch.sqrt(kernel_HSIC(X, X, device, sigma))
    var2 = torch.sqrt(kernel_HSIC(Y, Y, device, sigma))
    return hsic / (var1 * var2)


def linear_HSIC(X, Y, device=None):
    """Biased HSIC of the linear kernels XX^T and YY^T."""
    X, Y = to_device(X, device), to_device(Y, device)
    return torch.sum(centering(X @ X.T) * centering(Y @ Y.T))


def linear_CKA(X, Y, device=None):
    """Linear CKA of X (n x d1) and Y (n x d2), rows paired."""
    hsic = linear_HSIC(X, Y, device)
    var1 = torch.sqrt(linear_HSIC(X, X, device))
    var2 = torch.sqrt(linear_HSIC(Y, Y, device))
    return hsic / (var1 * var2)


def symmetric(C):
    """(C + C^T) / 2: exactly symmetric (float addition commutes). Centring rounds the [i, j] and [j, i]
    entries differently (about 1e-8 relative in float32, 1e-17 in float64); the QAP solver takes its
    cheaper symmetric branch only on exactly symmetric matrices."""
    return (C + C.T) / 2


def centered_scaled_corr(X, device=None):
    """H XX^T H / sqrt(HSIC(XX^T, XX^T)): the linear-kernel graph that QAP can match (exactly symmetric)."""
    X = to_device(X, device)
    return symmetric(centering(X @ X.T)) / torch.sqrt(linear_HSIC(X, X))


def centered_scaled_corr_rbf(X, device=None, sigma=None):
    """H K H / sqrt(HSIC(K, K)) with K the RBF kernel of X: the paper's QAP input (exactly symmetric;
    K already is, as sq_dists is)."""
    X = to_device(X, device)
    C = symmetric(centering(rbf(X, sigma)))
    return C / torch.sqrt(torch.sum(C * C))


class KernelCKA:
    """The paper's per-pair kernel CKA object (kept for code written against it; slow by design)."""

    def __init__(self, n, device=None):
        self.device = device

    def kernel_HSIC(self, X, Y, sigma=None):
        return kernel_HSIC(X, Y, self.device, sigma)

    def calculate(self, X, Y, sigma=None):
        return kernel_CKA(X, Y, self.device, sigma)


class LinearCKA:
    """The paper's per-pair linear CKA object (kept for code written against it; slow by design)."""

    def __init__(self, n, device=None):
        self.device = device

    def linear_HSIC(self, X, Y, sigma=None):
        return linear_HSIC(X, Y, self.device)

    def calculate(self, X, Y, sigma=None):
        return linear_CKA(X, Y, self.device)
