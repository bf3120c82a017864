"""tf.data builders: TaskGen's per-task records -> episode batches exactly as in ``schemas/episodes.md``.

* :func:`training_episodes` — meta-train records, a fresh episode per task every time a task is
  drawn: user setting, a random support / query split (``query_size`` query rows); scenario
  setting, ``support_positives`` + ``query_positives`` random positives, each paired with a
  freshly sampled negative (drawn uniformly among the scenario's items the same user did not
  interact with).
* :func:`evaluation_episodes` — fixed episodes of meta-test / meta-valid records: user setting,
  the stored support / query rows; scenario setting, the ranking layout (one task row per
  scenario and evaluation user: the scenario's fixed support set, and every candidate item of
  the scenario for that user, label 1 for the user's held-out positives).

Records hold ids only (``schemas/task_records.md``); every feature is gathered in-graph from the
catalog TaskGen writes beside them (:func:`catalog_tables`: one id-indexed tensor per feature).
All work is vectorised over a batch of tasks with TensorFlow ops (ragged gathers, sorts and
binary searches); randomness is
stateless, seeded by ``(seed, batch number)``, so a run is reproducible while every epoch draws
new episodes. Output: dense, padded ``int64`` features (``[B, S]`` / ``[B, S, max_len]``),
``float32`` labels and masks, padding at the end of each task's rows.
"""

from __future__ import annotations

import glob
import os
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

import cmml  # noqa: F401  (Keras 2 before TensorFlow)
from cmml.schemas import episodes as E
from cmml.schemas import tasks as T


# --- input --------------------------------------------------------------------------------------------------
def task_files(source: str | os.PathLike | Sequence[str], split: str | None = None) -> list[str]:
    """Record files from a TaskGen output folder (+ split), a glob pattern, or a list of files."""
    if isinstance(source, (list, tuple)):
        files = [str(f) for f in source]
    else:
        source = os.fspath(source)
        pattern = T.split_pattern(source, split) if split else source
        files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no task records found for {source!r}" + (f" split {split!r}" if split else ""))
    return files


def _records(files: Sequence[str]) -> tf.data.Dataset:
    gz = [f for f in files if f.endswith(".gz")]
    if gz and len(gz) != len(files):
        raise ValueError("task record files mix compressed (.gz) and uncompressed files")
    return tf.data.TFRecordDataset(list(files), compression_type="GZIP" if gz else "", buffer_size=4 << 20)


def catalog_tables(root: str | os.PathLike, feature_specs: Sequence[E.FeatureSpec]) -> dict[str, np.ndarray]:
    """The catalog of a TaskGen output as one array per feature, indexed by the records' catalog rows.

    Returns ``{feature: [n + 1] int64}`` (``[n + 1, max_len]`` for a multi-valued feature, cut or
    0-padded to the spec's ``max_len``); row 0 is all zeros — an entity outside the catalog has
    every attribute missing.
    """
    root = os.fspath(root)
    out = {}
    for side in ("user", "item"):
        specs = [s for s in feature_specs if s.side == side]
        if not specs:
            continue
        path = T.catalog_path(root, side)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"no {side} catalog at {path}: task records hold ids only and need the catalog TaskGen writes "
                "beside them (pass catalog=<TaskGen output folder>)"
            )
        _, features = T.read_catalog(path)
        for spec in specs:
            if spec.name not in features:
                raise ValueError(f"{path} has no feature {spec.name!r} (it has {sorted(features)})")
            values = features[spec.name]
            if spec.kind == "multi":
                values = values.reshape(len(values), -1)[:, : spec.max_len]
                values = np.pad(values, ((1, 0), (0, spec.max_len - values.shape[1])))
            else:
                values = np.pad(values.reshape(-1), (1, 0))
            out[spec.name] = values.astype(np.int64)
    return out


def _catalog(source, files: Sequence[str], catalog, specs) -> dict[str, tf.Tensor]:
    """The catalog tensors: given, from the folder given, or from the TaskGen output holding ``files``."""
    if catalog is None:
        if isinstance(source, (str, os.PathLike)) and os.path.isdir(os.fspath(source)):
            catalog = source
        else:  # <root>/Split-<split>/tasks-*.tfrecord*
            catalog = os.path.dirname(os.path.dirname(os.path.abspath(files[0])))
    if not isinstance(catalog, Mapping):
        catalog = catalog_tables(catalog, specs)
    return {spec.name: tf.constant(catalog[spec.name], tf.int64) for spec in specs}


# --- ragged helpers -----------------------------------------------------------------------------------------
def _take_rows(rt: tf.RaggedTensor, local: tf.RaggedTensor) -> tf.RaggedTensor:
    """Per task b, ``rt[b][local[b]]`` (``rt``: [B, (n)] or [B, (n), (L)]; ``local``: [B, (r)])."""
    base = tf.gather(rt.row_starts(), local.value_rowids())
    return local.with_values(tf.gather(rt.values, local.values + base))


def _dense(rt: tf.RaggedTensor, spec: E.FeatureSpec) -> tf.Tensor:
    """[B, (r)] or [B, (r), max_len] ragged -> dense, padding with 0 at the end."""
    if spec.kind == "multi":
        return rt.to_tensor(default_value=tf.constant(0, tf.int64), shape=[None, None, spec.max_len])
    return rt.to_tensor(default_value=tf.constant(0, tf.int64))


def _select(values: tf.Tensor, rowids: tf.Tensor, keep: tf.Tensor, nrows) -> tf.RaggedTensor:
    return tf.RaggedTensor.from_value_rowids(tf.boolean_mask(values, keep), tf.boolean_mask(rowids, keep), nrows=nrows)


def _episode_part(
    parsed: dict,
    tables: Mapping[str, tf.Tensor],
    specs: Sequence[E.FeatureSpec],
    part: str,
    user: tf.RaggedTensor,
    item: tf.RaggedTensor,
    label: tf.RaggedTensor,
) -> dict:
    """Rows given as (local user index, local item index, label) -> the dense tensors of one part,
    attributes gathered from the catalog ``tables``."""
    rows = {"user": _take_rows(parsed[T.USER_INDEX], user), "item": _take_rows(parsed[T.ITEM_INDEX], item)}
    out = {}
    for spec in specs:
        index = rows[spec.side]
        out[E.key(part, spec.name)] = _dense(index.with_values(tf.gather(tables[spec.name], index.values)), spec)
    out[E.key(part, E.LABEL)] = tf.cast(label, tf.float32).to_tensor(0.0)
    out[E.key(part, E.MASK)] = tf.ones_like(tf.cast(label, tf.float32)).to_tensor(0.0)
    return out


def _rows(parsed: dict, local: tf.RaggedTensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
    return (
        _take_rows(parsed[T.ROW_USER], local),
        _take_rows(parsed[T.ROW_ITEM], local),
        _take_rows(parsed[T.ROW_LABEL], local),
    )


def _shuffled_positions(lengths_source: tf.RaggedTensor, seed: tf.Tensor):
    """A random order of each task's rows: (local row of sorted position, position in task, rowids, n)."""
    rowids = lengths_source.value_rowids()
    starts = lengths_source.row_starts()
    total = tf.shape(rowids, out_type=tf.int64)[0]
    u = tf.random.stateless_uniform(tf.reshape(total, [1]), seed=seed, dtype=tf.float64)
    # rowid + u/2 < rowid + 1 exactly in float64, so tasks keep their flat ranges after the sort
    order = tf.argsort(tf.cast(rowids, tf.float64) + 0.5 * u, stable=True)
    first = tf.gather(starts, rowids)
    local = tf.cast(order, tf.int64) - first
    pos = tf.range(total, dtype=tf.int64) - first
    return local, pos, rowids, lengths_source.row_lengths()


def _interleave(a: tf.RaggedTensor, b: tf.RaggedTensor) -> tf.RaggedTensor:
    """Rows a0, b0, a1, b1, ... per task (a and b have the same row lengths)."""
    values = tf.reshape(tf.stack([a.values, b.values], axis=1), [-1])
    return tf.RaggedTensor.from_row_lengths(values, 2 * a.row_lengths())


def _check_setting(parsed: dict, setting: str) -> None:
    tf.debugging.assert_equal(
        parsed[T.SETTING], tf.constant(setting.encode()), message=f"task records of another setting than '{setting}'"
    )


# --- user setting -------------------------------------------------------------------------------------------
def _user_training(parsed, tables, specs, seed, query_size: int, max_support: int | None):
    local, pos, rowids, n = _shuffled_positions(parsed[T.ROW_ROLE], seed)
    q = tf.minimum(tf.constant(query_size, tf.int64), tf.maximum(n - 1, 0))
    s_end = n - q
    if max_support is not None:
        s_end = tf.minimum(s_end, max_support)
    nrows = tf.shape(n, out_type=tf.int64)[0]
    support = _select(local, rowids, pos < tf.gather(s_end, rowids), nrows)
    query = _select(local, rowids, pos >= tf.gather(n - q, rowids), nrows)
    out = _episode_part(parsed, tables, specs, E.SUPPORT, *_rows(parsed, support))
    out.update(_episode_part(parsed, tables, specs, E.QUERY, *_rows(parsed, query)))
    return out


def _fixed_user(parsed, tables, specs, pool_query_size: int | None):
    role = parsed[T.ROW_ROLE]
    if pool_query_size is not None:  # pool rows: the stored protocol order, last k rows are the query
        pos = tf.range(tf.shape(role.values, out_type=tf.int64)[0]) - tf.gather(role.row_starts(), role.value_rowids())
        n = tf.gather(role.row_lengths(), role.value_rowids())
        pooled = tf.where(pos >= n - pool_query_size, T.ROLE_QUERY, T.ROLE_SUPPORT)
        role = role.with_values(tf.where(role.values == T.ROLE_POOL, tf.cast(pooled, tf.int64), role.values))
    local = tf.RaggedTensor.from_row_splits(
        tf.range(tf.shape(role.values, out_type=tf.int64)[0]) - tf.gather(role.row_starts(), role.value_rowids()),
        role.row_splits,
    )
    nrows = role.nrows()
    support = _select(local.values, role.value_rowids(), role.values == T.ROLE_SUPPORT, nrows)
    query = _select(local.values, role.value_rowids(), role.values == T.ROLE_QUERY, nrows)
    out = _episode_part(parsed, tables, specs, E.SUPPORT, *_rows(parsed, support))
    out.update(_episode_part(parsed, tables, specs, E.QUERY, *_rows(parsed, query)))
    return out


# --- scenario setting ---------------------------------------------------------------------------------------
def _sample_negatives(parsed, user: tf.RaggedTensor, seed) -> tf.RaggedTensor:
    """For each (task, local user) of ``user``: a uniformly drawn candidate item of the task that
    the user did not interact with.

    Exact, without rejection: with the user's interacted items sorted, p_0 < p_1 < ..., the r-th
    free item is ``r + #{j : p_j - j <= r}``, counted with one ``searchsorted`` over all users of
    the batch at once. (A user who interacted with every candidate gets a random candidate.)
    """
    m = parsed[T.ITEM_RAW_ID].row_lengths()  # candidates per task
    width = tf.maximum(tf.reduce_max(m), 1)
    u_start = parsed[T.USER_RAW_ID].row_starts()
    row_user, row_item, label = parsed[T.ROW_USER], parsed[T.ROW_ITEM], parsed[T.ROW_LABEL]
    g_user = row_user.values + tf.gather(u_start, row_user.value_rowids())
    codes, _ = tf.unique(tf.sort(tf.boolean_mask(g_user * width + row_item.values, label.values > 0)))
    code_user = codes // width
    first = tf.searchsorted(codes, code_user * width, side="left", out_type=tf.int64)
    adjusted = codes - (tf.range(tf.shape(codes, out_type=tf.int64)[0]) - first)  # user * width + (p_j - j)
    who = user.values + tf.gather(u_start, user.value_rowids())
    lo = tf.searchsorted(codes, who * width, side="left", out_type=tf.int64)
    hi = tf.searchsorted(codes, (who + 1) * width, side="left", out_type=tf.int64)
    m_of = tf.gather(m, user.value_rowids())
    free = m_of - (hi - lo)
    u = tf.random.stateless_uniform(tf.shape(who, out_type=tf.int64), seed=seed, dtype=tf.float64)
    r = tf.minimum(tf.cast(u * tf.cast(tf.maximum(free, 1), tf.float64), tf.int64), tf.maximum(free, 1) - 1)
    chosen = r + tf.searchsorted(adjusted, who * width + r, side="right", out_type=tf.int64) - lo
    fallback = tf.minimum(tf.cast(u * tf.cast(m_of, tf.float64), tf.int64), m_of - 1)
    return user.with_values(tf.where(free > 0, chosen, fallback))


def _scenario_training(parsed, tables, specs, seed, support_positives: int, query_positives: int):
    label = parsed[T.ROW_LABEL]
    # positive rows only (meta-train records have no stored negatives, but stay safe on others)
    positives = tf.ragged.boolean_mask(
        tf.RaggedTensor.from_row_splits(
            tf.range(tf.shape(label.values, out_type=tf.int64)[0])
            - tf.gather(label.row_starts(), label.value_rowids()),
            label.row_splits,
        ),
        label > 0,
    )
    local, pos, rowids, n = _shuffled_positions(positives, seed[0])
    s = tf.minimum(tf.constant(support_positives, tf.int64), tf.maximum(n // 3, 1))
    q = tf.minimum(tf.constant(query_positives, tf.int64), tf.maximum(n - s, 0))
    nrows = tf.shape(n, out_type=tf.int64)[0]
    s_of, q_of = tf.gather(s, rowids), tf.gather(q, rowids)
    parts = {}
    for name, keep, sd in ((E.SUPPORT, pos < s_of, seed[1]), (E.QUERY, (pos >= s_of) & (pos < s_of + q_of), seed[2])):
        sel = _take_rows(positives, _select(local, rowids, keep, nrows))  # -> local row indices
        user, item, _ = _rows(parsed, sel)
        neg = _sample_negatives(parsed, user, sd)
        ones = tf.ones_like(tf.cast(user, tf.float32))
        parts.update(
            _episode_part(
                parsed,
                tables,
                specs,
                name,
                _interleave(user, user),
                _interleave(item, neg),
                _interleave(ones, 0.0 * ones),
            )
        )
    return parts


def _ranking_rows(parsed, tables, specs, include_task_key: bool) -> tf.data.Dataset:
    """One parsed scenario record (batch of 1) -> a dataset of (scenario, evaluation user) task rows."""
    role = parsed[T.ROW_ROLE].values
    r_user, r_item, r_label = parsed[T.ROW_USER].values, parsed[T.ROW_ITEM].values, parsed[T.ROW_LABEL].values
    s_idx = tf.where(role == T.ROLE_SUPPORT)[:, 0]
    q_idx = tf.where(role == T.ROLE_QUERY)[:, 0]
    eval_users, held_user = tf.unique(tf.gather(r_user, q_idx), out_idx=tf.int64)
    n_eval = tf.shape(eval_users, out_type=tf.int64)[0]
    m = tf.shape(parsed[T.ITEM_RAW_ID].values, out_type=tf.int64)[0]
    s_count = tf.shape(s_idx, out_type=tf.int64)[0]
    labels = tf.scatter_nd(
        tf.stack([held_user, tf.gather(r_item, q_idx)], axis=1), tf.ones_like(q_idx, tf.float32), tf.stack([n_eval, m])
    )
    labels = tf.minimum(labels, 1.0)  # a duplicated interaction is still one positive
    out = {}
    for spec in specs:
        index = parsed[T.USER_INDEX if spec.side == "user" else T.ITEM_INDEX].values
        table = tf.gather(tables[spec.name], index)  # the task's users [u] / items [m] ([u|m, L] for multi)
        support_idx = tf.gather(r_user if spec.side == "user" else r_item, s_idx)
        support = tf.gather(table, support_idx)
        out[E.key(E.SUPPORT, spec.name)] = tf.broadcast_to(
            support[None], tf.concat([[n_eval], tf.shape(support, out_type=tf.int64)], 0)
        )
        if spec.side == "user":
            per_user = tf.gather(table, eval_users)  # [E] or [E, L]
            shape = tf.concat([[n_eval, m], tf.shape(per_user, out_type=tf.int64)[1:]], 0)
            out[E.key(E.QUERY, spec.name)] = tf.broadcast_to(tf.expand_dims(per_user, 1), shape)
        else:
            out[E.key(E.QUERY, spec.name)] = tf.broadcast_to(
                table[None], tf.concat([[n_eval], tf.shape(table, out_type=tf.int64)], 0)
            )
    out[E.key(E.SUPPORT, E.LABEL)] = tf.broadcast_to(tf.gather(r_label, s_idx)[None], tf.stack([n_eval, s_count]))
    out[E.key(E.SUPPORT, E.MASK)] = tf.ones(tf.stack([n_eval, s_count]), tf.float32)
    out[E.key(E.QUERY, E.LABEL)] = labels
    out[E.key(E.QUERY, E.MASK)] = tf.ones(tf.stack([n_eval, m]), tf.float32)
    if include_task_key:
        out["task_key"] = tf.fill(tf.reshape(n_eval, [1]), parsed[T.TASK_KEY][0])
        out["user_raw_id"] = tf.gather(parsed[T.USER_RAW_ID].values, eval_users)
    return tf.data.Dataset.from_tensor_slices(out)


# --- public builders ----------------------------------------------------------------------------------------
def training_episodes(
    source: str | os.PathLike | Sequence[str],
    feature_specs: Sequence[E.FeatureSpec],
    *,
    setting: str = "user",
    batch_size: int = 32,
    query_size: int = 10,
    max_support: int | None = None,
    support_positives: int = 64,
    query_positives: int = 128,
    seed: int = 0,
    shuffle_buffer: int = 4096,
    repeat: bool | int = True,
    include_task_key: bool = False,
    catalog: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
) -> tf.data.Dataset:
    """Fresh training episodes from meta-train records (TaskGen output folder or record files).

    Args:
      source: TaskGen output folder (reads ``Split-meta_train/``), a glob pattern or a list of files.
      setting: 'user' (ratings) or 'scenario' (CTR, paired positive/negative rows).
      query_size / max_support: user setting; per task ``min(query_size, n - 1)`` query rows, the
        others (at most ``max_support``) are the support set.
      support_positives / query_positives: scenario setting; each positive is followed by a
        sampled negative of the same user, so S = 2 * support_positives, Q = 2 * query_positives
        (fewer for scenarios with few interactions: support min(support_positives, n // 3)).
      seed: seeds the task shuffle and every random draw (stateless, per batch number).
      repeat: True = endless, False = one pass over the tasks, n = n passes (fresh draws in each).
      catalog: the catalog the records' ids point into: a TaskGen output folder or the arrays of
        :func:`catalog_tables`; by default the TaskGen output holding the records.
    """
    if setting not in T.SETTINGS:
        raise ValueError(f"setting must be one of {T.SETTINGS}, not {setting!r}")
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(os.fspath(source)):
        files = task_files(source, "meta_train")
    else:
        files = task_files(source)
    specs = list(feature_specs)
    tables = _catalog(source, files, catalog, specs)
    ds = _records(files)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat is True:
        ds = ds.repeat()
    elif repeat is not False and int(repeat) > 1:
        ds = ds.repeat(int(repeat))
    ds = ds.batch(batch_size).enumerate()

    @tf.autograph.experimental.do_not_convert  # static control flow; converting it cost ~1 s per epoch
    def build(step, serialized):
        parsed = T.parse_task_records(serialized)
        _check_setting(parsed, setting)
        base = tf.stack([tf.constant(seed, tf.int64), step])
        if setting == "user":
            out = _user_training(parsed, tables, specs, base * [1, 3], query_size, max_support)
        else:
            seeds = [base * [1, 3] + [0, k] for k in range(3)]
            out = _scenario_training(parsed, tables, specs, seeds, support_positives, query_positives)
        if include_task_key:
            out["task_key"] = parsed[T.TASK_KEY]
        return out

    return ds.map(build, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def evaluation_episodes(
    source: str | os.PathLike | Sequence[str],
    feature_specs: Sequence[E.FeatureSpec],
    *,
    setting: str = "user",
    split: str = "meta_test",
    batch_size: int = 32,
    pool_query_size: int | None = None,
    include_task_key: bool = False,
    catalog: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
) -> tf.data.Dataset:
    """Fixed, reproducible episodes (same order and content on every pass).

    Args:
      source: TaskGen output folder (reads ``split``), a glob pattern or a list of files.
      setting: 'user' — stored support (role 1) and query (role 2) rows; 'scenario' — ranking
        layout, one task row per (scenario, evaluation user).
      pool_query_size: user setting; also turn meta-train (pool) records into fixed episodes,
        the last ``pool_query_size`` stored rows (protocol order) being the query.
      include_task_key: add ``task_key`` (and ``user_raw_id`` for ranking rows) to each batch.
      catalog: as in :func:`training_episodes`.
    """
    if setting not in T.SETTINGS:
        raise ValueError(f"setting must be one of {T.SETTINGS}, not {setting!r}")
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(os.fspath(source)):
        files = task_files(source, split)
    else:
        files = task_files(source)
    specs = list(feature_specs)
    tables = _catalog(source, files, catalog, specs)
    ds = _records(files)
    if setting == "user":

        @tf.autograph.experimental.do_not_convert
        def build(serialized):
            parsed = T.parse_task_records(serialized)
            _check_setting(parsed, setting)
            out = _fixed_user(parsed, tables, specs, pool_query_size)
            if include_task_key:
                out["task_key"] = parsed[T.TASK_KEY]
            return out

        return (
            ds.batch(batch_size)
            .map(build, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    @tf.autograph.experimental.do_not_convert
    def parse_one(serialized):
        parsed = T.parse_task_records(serialized)
        _check_setting(parsed, setting)
        return parsed

    ranking_rows = tf.autograph.experimental.do_not_convert(
        lambda parsed: _ranking_rows(parsed, tables, specs, include_task_key)
    )
    rows = ds.batch(1).map(parse_one).flat_map(ranking_rows)
    return rows.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)
