import numpy as np
import pytest

from ml_backend.grouping.knn_graph import ABSENT, edges_from_knn, knn, row_dot


@pytest.mark.parametrize("block", [1, 3, 1024])
def test_knn_matches_dense_argsort(block):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    indices, sims = knn(x, 5, block=block)
    dense = x @ x.T
    np.fill_diagonal(dense, -np.inf)
    expected = np.argsort(-dense, axis=1)[:, :5]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(dense, expected, axis=1), rtol=1e-6)


def test_zero_rows_have_no_neighbours_and_are_nobodys():
    x = np.array([[1, 0], [0, 0], [0.9, 0.1], [0, 1]], np.float32)
    indices, sims = knn(x, 3)
    assert (indices[1] == ABSENT).all()
    assert 1 not in indices
    # only two other lines have vectors: the third slot is empty
    assert indices[0, 2] == ABSENT and sims[0, 2] == -np.inf


def test_edges_are_undirected_unique_and_sorted():
    indices = np.array([[1, 2], [0, ABSENT], [0, 1]])
    edges = edges_from_knn(indices)
    np.testing.assert_array_equal(edges, [[0, 1], [0, 2], [1, 2]])


def test_row_dot():
    a = np.eye(3, dtype=np.float32)
    pairs = np.array([[0, 0], [0, 1]])
    np.testing.assert_allclose(row_dot(a, a, pairs), [1.0, 0.0])
