"""One reader per input format; each returns the common :class:`~distributed_rec.data.raw.RawData`."""

from __future__ import annotations

from collections.abc import Callable

from distributed_rec.config import DataConfig
from distributed_rec.data.raw import RawData
from distributed_rec.errors import DataError


def _readers() -> dict[str, Callable[[DataConfig], RawData]]:
    from distributed_rec.data.readers import amazon2023, lcrec, movielens, synthetic, table

    return {
        "lcrec": lcrec.read_lcrec,
        "amazon2023": amazon2023.read_amazon2023,
        "amazon2023_benchmark": amazon2023.read_amazon2023_benchmark,
        "movielens": movielens.read_movielens,
        "embedded": movielens.read_embedded,
        "table": table.read_table,
        "synthetic": synthetic.read_synthetic,
    }


def read_dataset(config: DataConfig) -> RawData:
    """Read the dataset `config` points at in the common raw form."""
    readers = _readers()
    if config.format not in readers:
        raise DataError(
            config.path or "<config>",
            f"unknown data.format {config.format!r}; expected one of {', '.join(readers)}",
        )
    return readers[config.format](config)
