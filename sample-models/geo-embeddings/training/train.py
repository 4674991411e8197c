"""Train the geo-embeddings ETA model (numpy only) and write its weights and self-tests.

Data set (synthetic, seeded, so anyone can regenerate it): a square city 40 km across, cut into a grid
of C cells (row-major, W = ceil(sqrt(C)) cells to a row, the last row possibly short), where C is
chosen so that the embedding table C × 16 float32 is --mb MiB (MB = 2^20 bytes). 120,000 trips run
between a fixed set of 4,096 "active" cells: a 64 × 64 lattice of places in the city, snapped to the
grid, so the same places whatever C is. Each trip has
  pickup_cell    an active cell
  dropoff_cell   an active cell near it (lattice offset ~ Normal(0, 8) steps a side, ≈ 5 km)
  hour           hour of day of the pickup, 0-23
  distance_km    straight-line distance between the two cells' centres
The true ETA in minutes is 3 + 60 · distance / speed, speed = 38 km/h / (1 + congestion · rush(hour)),
congestion = mean of the two cells' congestion (a downtown peak, a busy district in the south-east and a
gentle ripple, a function of the cell's place in the city) and rush(hour) = 0.6 + peaks at 8:00 and
17:30; plus Gaussian noise (σ = 1.5 minutes).

Model: the pickup and drop-off embeddings, looked up in ONE shared table E[C, 16], then
[distance_km standardised, sin(2πh/24), cos(2πh/24)] → dense 32 + ReLU → linear → eta_minutes, trained
with minibatch Adam written here. Only the rows of active cells are trained; every other row keeps its
seeded initialisation (Normal(0, 0.1)), so a 1 GiB table costs the time to draw and write it, not to
train it. The Rust model (src/lib.rs) computes the same forward pass in f64 from the stored float32
weights; the self-tests are this script's own forward pass on held-out trips and on cells no trip
touched, the last cell of the table among them, so a table that is shifted or cut short fails them.

Weights file (little-endian): b"FGEO", u32 version 1, u32 C, u32 D, u32 H; then float32 W1[(2D+3) × H]
row-major, b1[H], w2[H], b2, distance mean, distance std; zeros up to a 64-byte boundary; then the table
E[C × D] row-major, last, so the guest reads rows in place.

Run: python train.py [--mb 4] [--out DIR]
  writes DIR/geo-embeddings.weights and DIR/geo-embeddings.tests.json. The default DIR is this sample's
  directory, and there the tests file is named tests.json instead (with example-request.json beside it):
  scripts/build-models.sh ships a sample's tests.json with the weights that weights.file names.
  It also writes the training profile (profile.json in the sample's directory, else
  DIR/geo-embeddings.profile.json): the training trips' request fields and the network's answers on
  them, which the host compares live traffic with (`ferry_sdk.profile`).
"""
import argparse
import json
import math
import pathlib
import struct
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE.parent.parent / "guest-sdk" / "python"))
from ferry_sdk.profile import write_profile  # noqa: E402

NAME = "geo-embeddings"
SEED = 20261201
D, H = 16, 32  # embedding width, hidden units
CITY_KM = 40.0
LATTICE = 64  # active cells: a LATTICE × LATTICE lattice of places
TRIPS = 120_000
TABLE_CHUNK_ROWS = 1 << 20  # rows of the table drawn at a time
TABLE_ALIGN = 64


class Grid:
    """C cells, row-major, `width` to a row; cell centres in km."""

    def __init__(self, cells: int):
        self.cells = cells
        self.width = math.ceil(math.sqrt(cells))
        self.cell_km = CITY_KM / self.width

    def cell_at(self, x_km: np.ndarray, y_km: np.ndarray) -> np.ndarray:
        col = np.clip((x_km / self.cell_km).astype(np.int64), 0, self.width - 1)
        row = np.clip((y_km / self.cell_km).astype(np.int64), 0, self.width - 1)
        return row * self.width + col

    def centre_km(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cell = np.asarray(cell, dtype=np.int64)
        return (cell % self.width + 0.5) * self.cell_km, (cell // self.width + 0.5) * self.cell_km

    def distance_km(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        (ax, ay), (bx, by) = self.centre_km(a), self.centre_km(b)
        return np.hypot(ax - bx, ay - by)


def congestion(grid: Grid, cell: np.ndarray) -> np.ndarray:
    """Ground truth: how congested a cell is (0 = free-flowing), from its place in the city."""
    x, y = grid.centre_km(cell)
    downtown = 1.1 * np.exp(-((x - 20) ** 2 + (y - 21) ** 2) / (2 * 5.0**2))
    district = 0.6 * np.exp(-((x - 31) ** 2 + (y - 9) ** 2) / (2 * 3.0**2))
    ripple = 0.15 * (1 + np.sin(x / 3.0) * np.cos(y / 4.0))
    return downtown + district + ripple


def rush(hour: np.ndarray) -> np.ndarray:
    return 0.6 + 1.0 * np.exp(-((hour - 8.0) ** 2) / (2 * 1.2**2)) + 0.9 * np.exp(-((hour - 17.5) ** 2) / (2 * 1.5**2))


def true_eta(grid: Grid, pickup, dropoff, hour, distance) -> np.ndarray:
    c = 0.5 * (congestion(grid, pickup) + congestion(grid, dropoff))
    speed = 38.0 / (1.0 + c * rush(hour))
    return 3.0 + 60.0 * distance / speed


def active_lattice(grid: Grid) -> np.ndarray:
    """cell[i, j] of lattice place (i, j); places that fall off a short last row move to the row above."""
    place = (np.arange(LATTICE) + 0.5) * CITY_KM / LATTICE
    cells = grid.cell_at(place[None, :], place[:, None])
    while (cells >= grid.cells).any():
        cells = np.where(cells >= grid.cells, cells - grid.width, cells)
    return cells


def trips(grid: Grid, rng: np.random.Generator) -> dict:
    lattice = active_lattice(grid)
    pi, pj = rng.integers(0, LATTICE, TRIPS), rng.integers(0, LATTICE, TRIPS)
    di = np.clip(pi + np.rint(rng.normal(0, 8, TRIPS)).astype(np.int64), 0, LATTICE - 1)
    dj = np.clip(pj + np.rint(rng.normal(0, 8, TRIPS)).astype(np.int64), 0, LATTICE - 1)
    pickup, dropoff = lattice[pi, pj], lattice[di, dj]
    hour = rng.integers(0, 24, TRIPS)
    distance = grid.distance_km(pickup, dropoff)
    eta = true_eta(grid, pickup, dropoff, hour, distance) + rng.normal(0, 1.5, TRIPS)
    return {"pickup": pickup, "dropoff": dropoff, "hour": hour, "distance": distance,
            "eta": np.maximum(eta, 1.0)}


def embedding_table(cells: int, rng: np.random.Generator) -> np.ndarray:
    """E[C, D] float32 ~ Normal(0, 0.1), drawn in chunks straight into the one array."""
    table = np.empty((cells, D), dtype="<f4")
    for start in range(0, cells, TABLE_CHUNK_ROWS):
        chunk = table[start:start + TABLE_CHUNK_ROWS]
        rng.standard_normal(out=chunk, dtype=np.float32)
        chunk *= np.float32(0.1)
    return table


def trip_features(distance, hour, dist_mean: float, dist_std: float) -> np.ndarray:
    """The three inputs after the two embeddings: standardised distance, hour on the clock face."""
    angle = 2.0 * np.pi * np.asarray(hour, dtype=np.float64) / 24.0
    d = (np.asarray(distance, dtype=np.float64) - dist_mean) / dist_std
    return np.stack([d, np.sin(angle), np.cos(angle)], axis=-1)


def features(emb_pickup, emb_dropoff, distance, hour, dist_mean: float, dist_std: float) -> np.ndarray:
    """The model's input vector; mirrored in src/lib.rs (`GeoEmbeddings::features`)."""
    return np.concatenate([emb_pickup, emb_dropoff, trip_features(distance, hour, dist_mean, dist_std)], axis=-1)


class Adam:
    def __init__(self, params: list[np.ndarray], lr: float):
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray], b1=0.9, b2=0.999, eps=1e-8):
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / (1 - b1**self.t)) / (np.sqrt(v / (1 - b2**self.t)) + eps)


def train(data: dict, active: np.ndarray, table: np.ndarray, rng: np.random.Generator, n_train: int):
    """Fits the dense network and the active cells' rows; writes those rows back into `table`."""
    # Trained parameters: the active cells' rows (in `active`'s sorted order) and the dense network.
    p_slot, d_slot = np.searchsorted(active, data["pickup"]), np.searchsorted(active, data["dropoff"])
    dist_mean = np.float32(data["distance"][:n_train].mean())
    dist_std = np.float32(data["distance"][:n_train].std())
    y_mean, y_std = data["eta"][:n_train].mean(), data["eta"][:n_train].std()
    target = (data["eta"] - y_mean) / y_std
    rest = trip_features(data["distance"], data["hour"], float(dist_mean), float(dist_std))

    emb = table[active].astype(np.float64)
    w1 = rng.normal(0, math.sqrt(2.0 / (2 * D + 3)), (2 * D + 3, H))
    b1 = np.zeros(H)
    w2 = rng.normal(0, math.sqrt(1.0 / H), H)
    b2 = np.zeros(1)
    opt = Adam([emb, w1, b1, w2, b2], lr=3e-3)
    batch, epochs = 256, 8
    for epoch in range(epochs):
        if epoch == epochs - 2:
            opt.lr = 1e-3
        order = rng.permutation(n_train)
        for start in range(0, n_train, batch):
            i = order[start:start + batch]
            x = np.concatenate([emb[p_slot[i]], emb[d_slot[i]], rest[i]], axis=1)
            z = x @ w1 + b1
            h = np.maximum(z, 0.0)
            err = h @ w2 + b2[0] - target[i]
            g_out = 2.0 * err / len(i)
            g_w2, g_b2 = h.T @ g_out, np.array([g_out.sum()])
            g_z = np.outer(g_out, w2) * (z > 0)
            g_w1, g_b1 = x.T @ g_z, g_z.sum(axis=0)
            g_x = g_z @ w1.T
            g_emb = np.zeros_like(emb)
            np.add.at(g_emb, p_slot[i], g_x[:, :D])
            np.add.at(g_emb, d_slot[i], g_x[:, D:2 * D])
            opt.step([g_emb, g_w1, g_b1, g_w2, g_b2])

    table[active] = emb.astype(np.float32)
    # The output layer predicts standardised minutes; fold the scaling into it.
    return {
        "w1": w1.astype(np.float32), "b1": b1.astype(np.float32),
        "w2": (w2 * y_std).astype(np.float32), "b2": np.array([b2[0] * y_std + y_mean], dtype=np.float32),
        "scaling": np.array([dist_mean, dist_std], dtype=np.float32),
    }


def predict(net: dict, table: np.ndarray, pickup, dropoff, hour, distance) -> np.ndarray:
    """The forward pass of the served model: float32 weights, f64 arithmetic (as src/lib.rs)."""
    x = features(table[pickup].astype(np.float64), table[dropoff].astype(np.float64), distance, hour,
                 float(net["scaling"][0]), float(net["scaling"][1]))
    h = np.maximum(x @ net["w1"].astype(np.float64) + net["b1"].astype(np.float64), 0.0)
    return h @ net["w2"].astype(np.float64) + float(net["b2"][0])


def write_weights(path: pathlib.Path, net: dict, table: np.ndarray) -> None:
    dense = np.concatenate([net["w1"].ravel(), net["b1"], net["w2"], net["b2"], net["scaling"]]).astype("<f4")
    head = b"FGEO" + struct.pack("<4I", 1, table.shape[0], D, H) + dense.tobytes()
    head += bytes(-len(head) % TABLE_ALIGN)
    with open(path, "wb") as f:
        f.write(head)
        table.tofile(f)  # straight from the array, no copy
    assert path.stat().st_size == len(head) + table.nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=4.0, help="size of the embedding table in MiB (default 4)")
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="output directory (default: the sample's)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    cells = max(2, round(args.mb * 2**20 / (D * 4)))
    if cells >= 2**32:
        parser.error(f"--mb {args.mb} needs {cells} cells; the format's u32 cell count holds fewer than 2^32")
    grid = Grid(cells)
    table = embedding_table(cells, np.random.default_rng([SEED, 1]))
    drawn = time.perf_counter()

    rng = np.random.default_rng([SEED, 2])
    data = trips(grid, rng)
    active = np.unique(np.concatenate([data["pickup"], data["dropoff"]]))
    n_train = int(0.9 * TRIPS)
    net = train(data, active, table, rng, n_train)
    trained = time.perf_counter()

    held = slice(n_train, None)
    predicted = predict(net, table, data["pickup"][held], data["dropoff"][held], data["hour"][held],
                        data["distance"][held])
    mae = np.abs(predicted - data["eta"][held]).mean()
    print(f"{cells:,} cells ({table.nbytes / 2**20:.2f} MiB table, grid {grid.width} wide, "
          f"{grid.cell_km * 1000:.0f} m cells), {len(active):,} trained; held-out MAE {mae:.2f} min "
          f"(noise σ 1.5, ETA std {data['eta'][held].std():.1f})")

    # Self-tests: held-out trips (one at the morning rush), a trip that ends where it starts, and trips
    # from, to and between cells no trip touched, the table's first and last cells among them.
    pick = [n_train, n_train + 1, n_train + 2]
    pick.append(n_train + int(np.flatnonzero(data["hour"][held] == 8)[0]))
    trips_ = [(int(data["pickup"][i]), int(data["dropoff"][i]), int(data["hour"][i])) for i in pick]
    trained_cells = set(active.tolist())

    def untrained(near: int) -> int:  # the first cell from `near` on that no trip touched
        return next((c for c in range(near, cells) if c not in trained_cells), near)

    a = int(active[len(active) // 2])
    u1, u2 = untrained(cells // 3), untrained(cells // 2 + 7)
    trips_ += [(a, a, 0), (a, u1, 17), (u1, u2, 12), (0, cells - 1, 23), (cells - 1, untrained(cells - 2), 8)]
    cases = []
    for n, (p, d, h) in enumerate(trips_):
        distance = round(float(grid.distance_km(p, d)), 3)
        eta = float(predict(net, table, np.array([p]), np.array([d]), np.array([h]), np.array([distance]))[0])
        kind = "trained" if p in trained_cells and d in trained_cells else "untrained"
        cases.append({
            "name": f"trip-{n}-{kind}-{p}-to-{d}",
            "request": {"features": {"pickup_cell": p, "dropoff_cell": d, "hour": h, "distance_km": distance}},
            "response": {"eta_minutes": eta},
        })
    tests = {"source": f"numpy {np.__version__} forward pass of training/train.py (--mb {args.mb:g})",
             "tolerance": 1e-6, "cases": cases}

    write_weights(out / f"{NAME}.weights", net, table)
    sample_dir = out == HERE
    (out / ("tests.json" if sample_dir else f"{NAME}.tests.json")).write_text(json.dumps(tests, indent=1) + "\n")
    if sample_dir:
        (out / "example-request.json").write_text(json.dumps(cases[3]["request"], indent=2) + "\n")
    trained_rows = slice(0, n_train)
    answers = predict(net, table, data["pickup"][trained_rows], data["dropoff"][trained_rows],
                      data["hour"][trained_rows], data["distance"][trained_rows])
    write_profile(out / ("profile.json" if sample_dir else f"{NAME}.profile.json"),
                  features={"pickup_cell": data["pickup"][trained_rows].tolist(),
                            "dropoff_cell": data["dropoff"][trained_rows].tolist(),
                            "hour": data["hour"][trained_rows].tolist(),
                            "distance_km": np.round(data["distance"][trained_rows], 3).tolist()},
                  outputs={"eta_minutes": answers.tolist()})
    print(f"wrote {out / f'{NAME}.weights'} and its tests: table drawn in {drawn - started:.1f} s, trained in "
          f"{trained - drawn:.1f} s, {time.perf_counter() - started:.1f} s in all")


if __name__ == "__main__":
    main()
