import numpy as np
import pytest
import reference_cases as ref
from hypothesis import given, settings
from hypothesis import strategies as st

import sheafsim as ss
from sheafsim.certificates import (
    as_cellular_sheaf,
    certify,
    extreme_eigenvalues,
    free_coboundary,
    free_laplacian,
)


@st.composite
def networks(draw):
    depth = draw(st.integers(min_value=1, max_value=5))
    widths = draw(
        st.lists(
            st.integers(min_value=1, max_value=9),
            min_size=depth + 2,
            max_size=depth + 2,
        )
    )
    output = draw(st.sampled_from(["identity", "sigmoid", "softmax"]))
    if output == "softmax":
        # A softmax over one unit is constant, and the constructor rejects it.
        widths[-1] = max(widths[-1], 2)
    seed = draw(st.integers(min_value=0, max_value=10_000))
    net = ss.NeuralSheaf.random(widths, seed=seed, output=output)
    # Non-zero biases so that the constant coordinate is exercised.
    rng = np.random.default_rng(seed + 1)
    biases = [rng.normal(size=b.shape) for b in net.biases]
    net = ss.NeuralSheaf(net.weights, biases, output=output)
    x = rng.normal(size=(widths[0], 3))
    return net, x


@settings(max_examples=40, deadline=None)
@given(networks())
def test_harmonic_extension_is_forward_pass(case):
    net, x = case
    certificate = certify(net, x)
    assert certificate.max_forward_difference.max() <= 1e-10
    assert certificate.unit_lower_triangular.all()
    assert np.abs(certificate.log_abs_det).max() <= 1e-12
    assert certificate.lambda_min.min() > 0


@settings(max_examples=40, deadline=None)
@given(networks(), st.integers(min_value=0, max_value=2**31))
def test_determinant_one_on_random_patterns(case, seed):
    # Random inputs of large scale visit many activation patterns.
    net, _ = case
    x = np.random.default_rng(seed).normal(scale=5.0, size=(net.widths[0], 1))
    delta = free_coboundary(net, x).toarray()
    assert np.allclose(np.triu(delta, 1), 0.0)
    assert np.all(np.diag(delta) == 1.0)
    sign, logdet = np.linalg.slogdet(delta)
    assert sign == 1.0
    assert abs(logdet) <= 1e-12


def test_free_laplacian_blocks():
    # L_free blocks: (z_l, z_l) = I + R_l, (z_l, a_l) = -R_l,
    # (a_l, a_l) = I + W_{l+1}^T W_{l+1}, (z_l, a_{l-1}) = -W_l.
    net = ss.NeuralSheaf.random([2, 3, 4, 1], seed=5)
    x = np.array([[0.3], [-1.2]])
    fp = net.forward(x)
    dense = free_laplacian(net, x).toarray()
    r1 = np.diag((fp["z1"][:, 0] >= 0).astype(float))
    w2 = net.weights[1]
    np.testing.assert_allclose(dense[0:3, 0:3], np.eye(3) + r1)
    np.testing.assert_allclose(dense[0:3, 3:6], -r1)
    np.testing.assert_allclose(dense[3:6, 3:6], np.eye(3) + w2.T @ w2)
    np.testing.assert_allclose(dense[6:10, 3:6], -w2)


def test_laplacian_of_general_sheaf_matches():
    net = ss.NeuralSheaf.random([3, 4, 4, 2], seed=2)
    x = np.random.default_rng(0).normal(size=(3, 1))
    sheaf, boundary, _ = as_cellular_sheaf(net, x)
    free_block, _ = sheaf.restricted_laplacian(boundary)
    np.testing.assert_allclose(
        free_block.toarray(), free_laplacian(net, x).toarray(), atol=1e-14
    )


def test_relative_h0_vanishes():
    net = ss.NeuralSheaf.random([2, 3, 2], seed=0)
    sheaf, boundary, _ = as_cellular_sheaf(net, np.ones((2, 1)))
    assert sheaf.relative_h0_dimension(boundary) == 0
    # Global sections: any x plus a free constant coordinate on every a_l.
    assert sheaf.h0_dimension() == sheaf.stalk_dim("x") + net.depth


def test_spectral_reference_case():
    case = ref.load("spectral_2_30_1")
    net = ref.network(case)
    lam_min, lam_max = extreme_eigenvalues(net, np.array(case["x"]))
    np.testing.assert_allclose(lam_min, case["expected"]["lambda_min"], atol=1e-8)
    np.testing.assert_allclose(lam_max, case["expected"]["lambda_max"], atol=1e-8)


def test_sparse_eigensolver_matches_dense(monkeypatch):
    import sheafsim.certificates as certificates

    net = ss.NeuralSheaf.random([4, 20, 20, 3], seed=8)
    x = np.random.default_rng(2).normal(size=(4, 2))
    dense = extreme_eigenvalues(net, x)
    monkeypatch.setattr(certificates, "DENSE_EIGEN_LIMIT", 10)
    sparse = extreme_eigenvalues(net, x)
    np.testing.assert_allclose(sparse[0], dense[0], rtol=1e-8)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=1e-8)


def test_certificate_needs_single_column():
    net = ss.NeuralSheaf.random([2, 3, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="expected one input column, got 2"):
        free_coboundary(net, np.ones((2, 2)))
