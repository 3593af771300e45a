"""Loss functions of the baselines against slow references."""

import pytest
import torch
import torch.nn.functional as F

from congkit.pipeline.trainers import auxconf_loss, wspo_loss


def test_auxconf_loss_limits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[0, :2] = -100
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(auxconf_loss(logits, labels, 0.0), ce)
    self_labels = logits.argmax(-1).masked_fill(labels == -100, -100)
    self_ce = F.cross_entropy(logits.flatten(0, 1), self_labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(auxconf_loss(logits, labels, 1.0), self_ce)
    torch.testing.assert_close(auxconf_loss(logits, labels, 0.3), 0.7 * ce + 0.3 * self_ce)


def test_wspo_loss_against_a_loop():
    g = torch.Generator().manual_seed(1)
    s, sr, w, wr = (torch.randn(3, 6, generator=g) for _ in range(4))
    mask = (torch.rand(3, 6, generator=g) > 0.3).float()
    terms = [(0.1 * (s[i, t] - sr[i, t]) - (w[i, t] - wr[i, t])) ** 2 for i in range(3) for t in range(6) if mask[i, t]]
    torch.testing.assert_close(wspo_loss(s, sr, w, wr, mask, 0.1), torch.stack(terms).mean())
    # zero exactly when the strong scaled log-ratio matches the weak one
    assert wspo_loss(sr + (w - wr) / 0.1, sr, w, wr, mask, 0.1).item() == pytest.approx(0.0, abs=1e-10)
