"""A DLRM written in plain PyTorch (the user's own model, not Strata's): a bottom MLP over
the dense counts, embedding bags from any module with TorchRec's interface, pairwise dot
interactions and a top MLP, trained with dense Adagrad and BCE loss. Small by default
(bottom 13-32-dim, top 32-1); ``bottom`` and ``top`` give other hidden widths, such as
MLPerf DLRM's (512, 256) and (1024, 1024, 512, 256)."""

import torch
from torch import nn


class SmallDlrm(nn.Module):
    def __init__(self, embedding_bags, features, dim, seed=0, bottom=(32,), top=(32,)):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding_bags = embedding_bags
        self.features = features
        self.bottom = _mlp([13, *bottom, dim], last_relu=True)
        pairs = (len(features) + 1) * len(features) // 2
        self.top = _mlp([dim + pairs, *top, 1], last_relu=False)

    def forward(self, dense, sparse):
        x = self.bottom(torch.log(dense + 3.0))
        pooled = self.embedding_bags(sparse)
        vectors = torch.stack([x] + [pooled[f] for f in self.features], dim=1)
        dots = torch.bmm(vectors, vectors.transpose(1, 2))
        i, j = torch.triu_indices(vectors.shape[1], vectors.shape[1], offset=1)
        return self.top(torch.cat([x, dots[:, i, j]], dim=1)).squeeze(1)


def _mlp(widths, last_relu):
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if last_relu or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train(model, batches, lr=0.05, window=0, read_ahead=None):
    """Trains over ``batches`` of (dense, features, labels); returns each step's loss."""
    optimizer = torch.optim.Adagrad([p for p in model.parameters()], lr=lr)
    losses = []
    stream = batches if read_ahead is None else read_ahead(batches)
    for dense, features, labels in stream:
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(dense, features), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
