"""Training entry points: ``python -m minitorch.train {scalar,tensor,digits}``.

* ``scalar``: a two-layer network of individual ``Scalar`` values on a toy 2-D data set (module 1).
* ``tensor``: the same network written with tensors and broadcasting (module 2).
* ``digits``: a small convolutional network on scikit-learn's bundled 8x8 digit images, on the
  numba backend (module 4). Test accuracy is measured on a held-out 20% split.

Each prints its progress and final accuracy; the exit code is 0 on success, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time

import minitorch
from minitorch.module import Module
from minitorch.scalar import Scalar
from minitorch.tensor import Tensor

DATASET_NAMES = {name.lower(): name for name in minitorch.datasets}


# ## Module 1: a network of Scalars


class ScalarLinear(Module):
    """y_j = b_j + sum_i x_i * w_ij, one Scalar parameter per weight."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        def init() -> Scalar:
            return Scalar(2 * (random.random() - 0.5))

        self.weights = [
            [self.add_parameter(f"weight_{i}_{j}", init()) for j in range(out_size)] for i in range(in_size)
        ]
        self.bias = [self.add_parameter(f"bias_{j}", init()) for j in range(out_size)]

    def forward(self, inputs: list[Scalar]) -> list[Scalar]:
        outputs = []
        for j, bias in enumerate(self.bias):
            total = bias.value
            for i, x in enumerate(inputs):
                total = total + x * self.weights[i][j].value
            outputs.append(total)
        return outputs


class ScalarNetwork(Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.layer1 = ScalarLinear(2, hidden)
        self.layer2 = ScalarLinear(hidden, hidden)
        self.layer3 = ScalarLinear(hidden, 1)

    def forward(self, x: tuple[float, float]) -> Scalar:
        h = [v.relu() for v in self.layer1.forward([Scalar(x[0]), Scalar(x[1])])]
        h = [v.relu() for v in self.layer2.forward(h)]
        return self.layer3.forward(h)[0].sigmoid()


def train_scalar(args: argparse.Namespace) -> float:
    data = minitorch.datasets[DATASET_NAMES[args.dataset]](args.pts)
    model = ScalarNetwork(args.hidden)
    optim = minitorch.SGD(model.parameters(), args.lr)
    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        optim.zero_grad()
        total_loss = 0.0
        correct = 0
        for x, y in zip(data.X, data.y):
            prob = model.forward(x)
            correct += int((prob.data > 0.5) == (y == 1))
            # Binary cross-entropy, averaged over the batch of all points.
            p = prob if y == 1 else -prob + 1.0
            loss = -p.log() / data.N
            loss.backward()
            total_loss += loss.data
        optim.step()
        accuracy = correct / data.N
        if epoch % args.log_every == 0 or epoch == args.epochs:
            print(f"epoch {epoch:4d}  loss {total_loss:.4f}  accuracy {accuracy:.1%}", flush=True)
    return accuracy


# ## Module 2: the same network with tensors


class TensorNetwork(Module):
    def __init__(self, hidden: int, backend: minitorch.TensorBackend) -> None:
        super().__init__()
        self.layer1 = minitorch.Linear(2, hidden, backend)
        self.layer2 = minitorch.Linear(hidden, hidden, backend)
        self.layer3 = minitorch.Linear(hidden, 1, backend)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer1.forward(x).relu()
        h = self.layer2.forward(h).relu()
        return self.layer3.forward(h).sigmoid().view(x.shape[0])


def train_tensor(args: argparse.Namespace) -> float:
    backend = BACKENDS[args.backend]()
    data = minitorch.datasets[DATASET_NAMES[args.dataset]](args.pts)
    X = minitorch.tensor(data.X, backend=backend)
    y = minitorch.tensor(data.y, backend=backend)
    model = TensorNetwork(args.hidden, backend)
    optim = minitorch.SGD(model.parameters(), args.lr)
    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        optim.zero_grad()
        prob = model.forward(X)
        # Binary cross-entropy: log p where y = 1, log(1 - p) where y = 0.
        p = prob * y + (-prob + 1.0) * (-y + 1.0)
        loss = -p.log().sum() / data.N
        loss.backward()
        optim.step()
        accuracy = ((prob > 0.5) == y).sum().item() / data.N
        if epoch % args.log_every == 0 or epoch == args.epochs:
            print(f"epoch {epoch:4d}  loss {loss.item():.4f}  accuracy {accuracy:.1%}", flush=True)
    return accuracy


# ## Module 4: a convolutional network on 8x8 digit images


class DigitsNetwork(Module):
    """conv 1->4 (3x3) + ReLU, conv 4->8 (3x3) + ReLU, 2x2 max-pool, Linear 128->64 + ReLU,
    dropout, Linear 64->10, log-softmax."""

    def __init__(self, backend: minitorch.TensorBackend, dropout: float) -> None:
        super().__init__()
        self.conv1 = minitorch.Conv2d(1, 4, (3, 3), backend)
        self.conv2 = minitorch.Conv2d(4, 8, (3, 3), backend)
        self.hidden = minitorch.Linear(8 * 4 * 4, 64, backend)
        self.output = minitorch.Linear(64, 10, backend)
        self.dropout_rate = dropout

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        h = self.conv1.forward(x).relu()
        h = self.conv2.forward(h).relu()
        h = minitorch.maxpool2d(h, (2, 2)).view(batch, 8 * 4 * 4)
        h = self.hidden.forward(h).relu()
        h = minitorch.dropout(h, self.dropout_rate, ignore=not self.training)
        return minitorch.logsoftmax(self.output.forward(h), dim=1)


def load_digits(backend: minitorch.TensorBackend, seed: int) -> tuple[list, list]:
    """scikit-learn's bundled digits, pixels scaled to [0, 1], shuffled, split 80/20."""
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    order = list(range(len(digits.target)))
    random.Random(seed).shuffle(order)
    images = [(digits.images[i] / 16.0).tolist() for i in order]
    labels = [int(digits.target[i]) for i in order]
    n_train = int(0.8 * len(order))
    return list(zip(images[:n_train], labels[:n_train])), list(zip(images[n_train:], labels[n_train:]))


Batch = tuple[Tensor, Tensor, list[int]]


def batches(samples: list, size: int, backend: minitorch.TensorBackend) -> list[Batch]:
    """(images (B, 1, 8, 8), one-hot labels (B, 10), labels) per batch."""
    out = []
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        images = minitorch.tensor([[img] for img, _ in chunk], backend=backend)
        labels = [label for _, label in chunk]
        one_hot_rows = [[1.0 if k == label else 0.0 for k in range(10)] for label in labels]
        one_hot = minitorch.tensor(one_hot_rows, backend=backend)
        out.append((images, one_hot, labels))
    return out


def accuracy_of(model: DigitsNetwork, data: list[Batch]) -> float:
    model.eval()
    correct = total = 0
    for images, _, labels in data:
        logp = model.forward(images).to_numpy()
        correct += int((logp.argmax(axis=1) == labels).sum())
        total += len(labels)
    model.train()
    return correct / total


def train_digits(args: argparse.Namespace) -> float:
    from tqdm import tqdm

    backend = BACKENDS[args.backend]()
    train, test = load_digits(backend, args.seed)
    train_batches = batches(train, args.batch_size, backend)
    test_batches = batches(test, 256, backend)
    print(f"digits: {len(train)} train / {len(test)} test images, batch {args.batch_size}, "
          f"backend {args.backend}", flush=True)
    model = DigitsNetwork(backend, args.dropout)
    optim = minitorch.SGD(model.parameters(), args.lr)
    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        # Linear learning-rate decay to 10% of the start: big steps early, calm ones at the end.
        optim.lr = args.lr * (1.0 - 0.9 * (epoch - 1) / max(1, args.epochs - 1))
        start = time.perf_counter()
        total_loss = 0.0
        random.shuffle(train_batches)
        bar = tqdm(train_batches, desc=f"epoch {epoch}/{args.epochs}", leave=False, file=sys.stderr,
                   disable=args.no_progress)
        for images, one_hot, labels in bar:
            optim.zero_grad()
            # Negative log-likelihood of the true class, averaged over the batch.
            loss = -(model.forward(images) * one_hot).sum() / len(labels)
            loss.backward()
            optim.step()
            total_loss += loss.item() * len(labels)
        accuracy = accuracy_of(model, test_batches)
        print(f"epoch {epoch:3d}  loss {total_loss / len(train):.4f}  test accuracy {accuracy:.1%}  "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    return accuracy


def _fast_backend() -> minitorch.TensorBackend:
    return minitorch.TensorBackend(minitorch.FastOps)


BACKENDS = {"simple": lambda: minitorch.SimpleBackend, "fast": _fast_backend}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minitorch.train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="task", required=True)

    scalar = sub.add_parser("scalar", help="Scalar network on a toy 2-D data set")
    scalar.add_argument("--dataset", choices=sorted(DATASET_NAMES), default="xor")
    scalar.add_argument("--pts", type=int, default=50)
    scalar.add_argument("--hidden", type=int, default=6)
    scalar.add_argument("--lr", type=float, default=0.5)
    scalar.add_argument("--epochs", type=int, default=300)

    tensor = sub.add_parser("tensor", help="tensor network on a toy 2-D data set")
    tensor.add_argument("--dataset", choices=sorted(DATASET_NAMES), default="split")
    tensor.add_argument("--pts", type=int, default=50)
    tensor.add_argument("--hidden", type=int, default=10)
    tensor.add_argument("--lr", type=float, default=0.5)
    tensor.add_argument("--epochs", type=int, default=400)
    tensor.add_argument("--backend", choices=sorted(BACKENDS), default="simple")

    digits = sub.add_parser("digits", help="conv net on scikit-learn's 8x8 digits")
    digits.add_argument("--epochs", type=int, default=10)
    digits.add_argument("--lr", type=float, default=0.2, help="start learning rate (decays to 10%%)")
    digits.add_argument("--batch-size", type=int, default=16)
    digits.add_argument("--dropout", type=float, default=0.1)
    digits.add_argument("--backend", choices=sorted(BACKENDS), default="fast")
    digits.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    for p in (scalar, tensor, digits):
        p.add_argument("--seed", type=int, default=0)
        if p is not digits:
            p.add_argument("--log-every", type=int, default=50)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("pts", "hidden", "epochs", "batch_size"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not (getattr(args, "lr", 1.0) > 0 and math.isfinite(args.lr)):
        parser.error("--lr must be a positive number")
    random.seed(args.seed)
    run = {"scalar": train_scalar, "tensor": train_tensor, "digits": train_digits}[args.task]
    accuracy = run(args)
    print(f"final accuracy {accuracy:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
