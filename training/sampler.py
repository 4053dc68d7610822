"""Per-dataset sample streams that a run can resume at any batch, on one or many processes.

Each dataset is read as an endless stream of epochs; epoch ``e`` is a permutation seeded by
``(seed, stream, e)`` and split across ranks as ``DistributedSampler`` does (padded by wrapping so
every rank gets as many samples). Batch ``k`` of a stream is therefore a pure function of
``(seed, stream, rank, world_size, batch_size, k)``: resuming needs only the number of batches
each stream has delivered, however far the DataLoader workers had read ahead.

Every sample also carries its own augmentation seed, so random crops and flips do not depend on
which worker (or whether a worker) loads it.
"""

from __future__ import annotations

import math

import torch

MASK64 = 2**64 - 1


def mix(*values: int) -> int:
    """A 63-bit seed from integers (a splitmix64-style hash: the same in every process and
    Python version, unlike ``hash``)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = ((h ^ (v & MASK64)) * 0xBF58476D1CE4E5B9) & MASK64
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & MASK64
        h ^= h >> 29
    return h & (2**63 - 1)


class StreamBatchSampler:
    """Endless batches of ``(index, sample_seed)`` for one dataset and one rank."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        stream: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        shuffle: bool = True,
    ) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed, self.stream = seed, stream
        self.rank, self.world_size = rank, world_size
        self.start_batch = start_batch
        self.shuffle = shuffle
        self.per_rank = math.ceil(num_samples / world_size)
        self._cached: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        """This rank's sample indices for one epoch."""
        if self._cached is None or self._cached[0] != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(mix(self.seed, self.stream, epoch))
                perm = torch.randperm(self.num_samples, generator=g).tolist()
            else:
                perm = list(range(self.num_samples))
            total = self.per_rank * self.world_size
            perm = (perm * math.ceil(total / len(perm)))[:total]  # pad by wrapping
            self._cached = (epoch, perm[self.rank :: self.world_size])
        return self._cached[1]

    def batch(self, k: int) -> list[tuple[int, int]]:
        out = []
        for pos in range(k * self.batch_size, (k + 1) * self.batch_size):
            epoch, offset = divmod(pos, self.per_rank)
            index = self.order(epoch)[offset]
            out.append((index, mix(self.seed, self.stream, self.rank, pos, 1)))
        return out

    def __iter__(self):
        k = self.start_batch
        while True:
            yield self.batch(k)
            k += 1


def choose_stream(seed: int, step: int, ratios: list[float]) -> int:
    """Which dataset step ``step`` draws from (sampling: alternate). The same on every rank,
    so all ranks run the same heads, and a pure function of the step, so resuming repeats it."""
    g = torch.Generator().manual_seed(mix(seed, step, 2))
    return int(torch.multinomial(torch.tensor(ratios, dtype=torch.float64), 1, generator=g))


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` runs its transforms under ``seed``.

    The global RNG is forked, so loading in the main process does not disturb dropout's RNG.
    """

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
