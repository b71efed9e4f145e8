"""MovieLens: ml-100k (`u.data`, `u.item`, `u.genre`), ml-1m/10m (`ratings.dat`, `movies.dat`),
ml-latest (`ratings.csv`, `movies.csv`), and the embedded default, MovieLens 100K as shipped in
the recbole wheel (`ml-100k.inter`, `ml-100k.item`), located without importing recbole.

Item fields: title (without the year), year, genres (comma separated); `categories` reads genres.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pyarrow as pa

from distributed_rec.config import DataConfig
from distributed_rec.data.files import data_root, read_csv_strings
from distributed_rec.data.issues import Issues
from distributed_rec.data.raw import RawData, require_integer_ids, validate_interactions
from distributed_rec.data.readers.delimited import read_delimited
from distributed_rec.errors import DataError

ALIASES = {"categories": "genres"}
USER_ITEM_IDS = {"user": "bad_user", "item": "bad_item"}
ITEM_IDS = {"item": "bad_item"}
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# (ratings file, movies file) per layout, tried in this order
LAYOUTS = {
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-latest": ("ratings.csv", "movies.csv"),
}


def split_title(title: str | None) -> tuple[str | None, str | None]:
    """'Toy Story (1995)' -> ('Toy Story', '1995')."""
    if not title:
        return title, None
    match = _TITLE_YEAR.match(title)
    return (match.group(1), match.group(2)) if match else (title, None)


def _items_table(ids: list, titles: list, years: list, genres: list) -> pa.Table:
    return pa.table(
        {
            "item": pa.array(ids, pa.string()),
            "title": pa.array(titles, pa.string()),
            "year": pa.array(years, pa.string()),
            "genres": pa.array(genres, pa.string()),
        }
    )


def _find_layout(root: Path, name: str) -> tuple[Path, str]:
    folders = [root / name] if name else [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    hits = [(f, k) for f in folders for k, (r, _) in LAYOUTS.items() if (f / r).is_file()]
    if not hits:
        expected = "; ".join(f"{r} + {m}" for r, m in LAYOUTS.values())
        raise DataError(
            root / name if name else root, f"no recognised MovieLens files ({expected})"
        )
    if len(hits) > 1 and hits[0][0] != root:
        names = ", ".join(f.name for f, _ in hits)
        raise DataError(root, f"several MovieLens datasets ({names}); choose one with --data.name")
    return hits[0]


def _read_100k_items(path: Path, issues: Issues) -> pa.Table:
    names = ("item", "title", "date", "video", "url", *(f"g{i}" for i in range(19)))
    table = read_delimited(path, "|", names, issues, encoding="latin-1", min_cells=3)
    table = require_integer_ids(table, path, issues, ITEM_IDS, "MovieLens")
    genre_file = path.with_name("u.genre")
    genres = list(_ML100K_GENRES)
    if genre_file.is_file():
        pairs = [line.split("|") for line in genre_file.read_text("latin-1").splitlines() if line]
        genres = [g for g, _ in sorted(pairs, key=lambda p: int(p[1]))]
    flags = [table[f"g{i}"].to_pylist() for i in range(len(genres))]
    titles, years, genre_text = [], [], []
    for row, (title, date) in enumerate(
        zip(table["title"].to_pylist(), table["date"].to_pylist(), strict=True)
    ):
        clean, year = split_title(title)
        titles.append(clean)
        years.append(year or (date[-4:] if date else None))
        genre_text.append(
            ", ".join(g for g, f in zip(genres, flags, strict=True) if f[row] == "1") or None
        )
    return _items_table(table["item"].to_pylist(), titles, years, genre_text)


def _read_titled_items(table: pa.Table) -> pa.Table:
    """movies.dat / movies.csv: title with '(year)', genres separated by '|'."""
    split = [split_title(t) for t in table["title"].to_pylist()]
    genres = [g.replace("|", ", ") if g else None for g in table["genres"].to_pylist()]
    return _items_table(
        table["item"].to_pylist(), [s[0] for s in split], [s[1] for s in split], genres
    )


def read_movielens(config: DataConfig) -> RawData:
    folder, layout = _find_layout(data_root(config.path), config.name)
    ratings_name, movies_name = LAYOUTS[layout]
    ratings_path, movies_path = folder / ratings_name, folder / movies_name
    issues, meta_issues = Issues(config.errors), Issues(config.errors)
    rating_cols = ("user", "item", "rating", "timestamp")
    if layout == "ml-100k":
        rows = read_delimited(ratings_path, "\t", rating_cols, issues)
        items = _read_100k_items(movies_path, meta_issues)
    elif layout == "ml-1m":
        rows = read_delimited(ratings_path, "::", rating_cols, issues, encoding="latin-1")
        movies = read_delimited(
            movies_path, "::", ("item", "title", "genres"), meta_issues, "latin-1"
        )
        movies = require_integer_ids(movies, movies_path, meta_issues, ITEM_IDS, "MovieLens")
        items = _read_titled_items(movies)
    else:
        table = read_csv_strings(ratings_path, issues, ("userId", "movieId", "timestamp"))
        rows = table.rename_columns({"userId": "user", "movieId": "item"})
        movies = read_csv_strings(movies_path, meta_issues, ("movieId", "title", "genres"))
        movies = movies.rename_columns({"movieId": "item"})
        movies = require_integer_ids(movies, movies_path, meta_issues, ITEM_IDS, "MovieLens")
        items = _read_titled_items(movies)
    interactions = validate_interactions(rows, ratings_path, issues)
    interactions = require_integer_ids(
        interactions, ratings_path, issues, USER_ITEM_IDS, "MovieLens"
    )
    return RawData(
        interactions, items, ratings_path, movies_path, issues, meta_issues, dict(ALIASES)
    )


def embedded_dir() -> Path:
    """recbole's bundled ml-100k folder, found without importing recbole (old dependencies)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("recbole", "the embedded dataset needs the recbole wheel: run `make run`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not folder.is_dir():
        raise DataError(folder, "recbole is installed without its dataset_example/ml-100k files")
    return folder


def read_embedded(config: DataConfig) -> RawData:
    folder = embedded_dir()
    inter_path, item_path = folder / "ml-100k.inter", folder / "ml-100k.item"
    issues, meta_issues = Issues(config.errors), Issues(config.errors)
    names = ("user", "item", "rating", "timestamp")
    rows = read_delimited(inter_path, "\t", names, issues, skip_header=True)
    item_names = ("item", "title", "year", "genres")
    items = read_delimited(item_path, "\t", item_names, meta_issues, skip_header=True, min_cells=2)
    items = require_integer_ids(items, item_path, meta_issues, ITEM_IDS, "MovieLens")
    genres = [g.replace(" ", ", ") if g else None for g in items["genres"].to_pylist()]
    items = items.set_column(3, "genres", pa.array(genres, pa.string())).drop_columns(["line"])
    interactions = validate_interactions(rows, inter_path, issues)
    interactions = require_integer_ids(interactions, inter_path, issues, USER_ITEM_IDS, "MovieLens")
    return RawData(interactions, items, inter_path, item_path, issues, meta_issues, dict(ALIASES))
