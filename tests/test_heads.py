"""The heads on their own: encoding, decoding, probabilities and the CORAL layer."""

from __future__ import annotations

import pytest
import torch

from pricenet.nn.heads import CategoricalHead, CoralHead, OrdinalHead, RegressionHead

KS = [2, 3, 4, 5, 6]
ALL_HEADS = [CategoricalHead, OrdinalHead, CoralHead, RegressionHead]


def logits_for(head, y: torch.Tensor) -> torch.Tensor:
    """Confident raw outputs that should decode to ``y`` (the inverse of each head's decode)."""
    k = head.num_classes
    if isinstance(head, CategoricalHead):
        return 10.0 * torch.nn.functional.one_hot(y, k).float() - 5.0
    if isinstance(head, OrdinalHead):  # also CORAL: its layer emits K-1 logits
        return 10.0 * head.encode(y) - 5.0
    return y.float().unsqueeze(1)


@pytest.mark.parametrize("head_cls", ALL_HEADS)
@pytest.mark.parametrize("k", KS)
def test_encode_then_decode_round_trips(head_cls, k):
    head = head_cls(num_classes=k)
    y = torch.arange(k).repeat(3)
    assert torch.equal(head.decode(logits_for(head, y)), y)
    probs = head.probabilities(logits_for(head, y))
    assert probs.shape == (len(y), k)
    assert torch.equal(probs.argmax(dim=1), y)


@pytest.mark.parametrize("k", KS)
def test_output_widths(k):
    assert CategoricalHead(k).num_outputs == k
    assert OrdinalHead(k).num_outputs == k - 1
    assert (CoralHead(k).num_outputs, CoralHead(k).backbone_outputs) == (k - 1, 1)
    assert RegressionHead(k).num_outputs == 1
    assert CategoricalHead(k).output_layer() is None


@pytest.mark.parametrize("k", KS)
def test_ordinal_encoding_is_the_cumulative_thresholds(k):
    y = torch.arange(k)
    encoded = OrdinalHead(k).encode(y)
    assert encoded.dtype == torch.float32
    assert encoded.shape == (k, k - 1)
    # row c holds c ones, then zeros: [y > 0, y > 1, ..., y > K-2]
    expected = torch.tril(torch.ones(k, k - 1), diagonal=-1)
    assert torch.equal(encoded, expected)


def test_ordinal_decodes_by_counting_positive_logits_not_by_position():
    head = OrdinalHead(4)
    # not monotone: counting gives 2 (two logits > 0) although the first is negative
    outputs = torch.tensor([[-1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, -5.0, 5.0], [1.0, 1.0, 1.0]])
    assert head.decode(outputs).tolist() == [2, 0, 2, 3]  # a logit of exactly 0 is not > 0


@pytest.mark.parametrize("head_cls", [CategoricalHead, OrdinalHead, CoralHead])
@pytest.mark.parametrize("k", KS)
def test_probability_rows_sum_to_one_and_are_non_negative(head_cls, k):
    head = head_cls(k)
    outputs = torch.randn(200, head.num_outputs, generator=torch.Generator().manual_seed(k)) * 4
    probs = head.probabilities(outputs)
    assert probs.shape == (200, k)
    assert float(probs.min()) >= 0.0
    assert torch.allclose(probs.sum(dim=1), torch.ones(200), atol=1e-6)


def test_ordinal_probabilities_from_monotone_sigmoids_are_the_gaps():
    p_above = torch.tensor([[0.9, 0.6, 0.2]])
    probs = OrdinalHead(4).probabilities(torch.logit(p_above))
    assert torch.allclose(probs, torch.tensor([[0.1, 0.3, 0.4, 0.2]]), atol=1e-6)


@pytest.mark.parametrize("k", KS)
def test_coral_is_rank_consistent(k):
    """One shared score plus decreasing biases: P(y > j) never increases with j."""
    layer = CoralHead(k).output_layer()
    assert [p.shape for p in layer.parameters()] == [torch.Size([k - 1])]
    scores = torch.linspace(-6, 6, 101).unsqueeze(1)
    above = torch.sigmoid(layer(scores))
    assert above.shape == (101, k - 1)
    assert bool((above[:, 1:] <= above[:, :-1]).all())
    # so counting and the probabilities agree on every row
    head = CoralHead(k)
    logits = layer(scores)
    assert torch.equal(head.decode(logits), (above > 0.5).sum(dim=1))
    # and the decoded class never decreases as the score grows
    decoded = head.decode(logits)
    assert bool((decoded[1:] >= decoded[:-1]).all())
    assert (int(decoded[0]), int(decoded[-1])) == (0, k - 1)


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ([-3.0, -0.4, 0.49, 0.51, 1.5, 2.5, 2.51, 3.4, 9.0], [0, 0, 0, 1, 2, 2, 3, 3, 3]),
    ],
)
def test_regression_rounds_half_to_even_and_clips(outputs, expected):
    head = RegressionHead(4)
    decoded = head.decode(torch.tensor(outputs).unsqueeze(1))
    assert decoded.dtype == torch.long
    assert decoded.tolist() == expected  # torch.round: 1.5 -> 2, 2.5 -> 2 (half to even)


def test_regression_probabilities_are_one_hot_on_the_decoded_class():
    head = RegressionHead(4)
    probs = head.probabilities(torch.tensor([[0.2], [2.7], [-1.0], [7.0]]))
    assert probs.tolist() == [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]


def test_regression_encodes_the_class_index_as_a_float_column():
    encoded = RegressionHead(4).encode(torch.tensor([0, 3, 1]))
    assert encoded.dtype == torch.float32
    assert encoded.tolist() == [[0.0], [3.0], [1.0]]


def test_categorical_ties_go_to_the_first_maximum():
    head = CategoricalHead(4)
    outputs = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0]])
    assert head.decode(outputs).tolist() == [0, 1, 0]
    assert head.probabilities(outputs).argmax(dim=1).tolist() == [0, 1, 0]


def test_categorical_encoding_is_the_class_index():
    y = torch.tensor([3, 0, 2])
    assert torch.equal(CategoricalHead(4).encode(y), y)
