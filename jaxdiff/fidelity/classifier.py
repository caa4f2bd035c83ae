"""The MNIST feature networks used by the fidelity metrics, registered by name.

Two independently trained networks of different build give two feature spaces
(:data:`FEATURE_NETWORKS`; results hold within one space, so a second one is a robustness
check): ``"lenet"`` (the default, every published number) and ``"mlp"``.

``"lenet"`` (:class:`LeNet`), inputs in the model scale ``float32 (B, 28, 28, 1)`` in
[-0.5, 0.5]::

    conv 5x5, 32 -> ReLU -> avg-pool 2        (28 -> 14)
    conv 3x3, 64 -> ReLU -> avg-pool 2        (14 -> 7)
    conv 3x3, 64 -> ReLU -> avg-pool 2        (7 -> 3)
    flatten (576) -> dense 128 -> ReLU        <- the feature layer (128-d)
    dropout 0.3 (training only) -> dense 10   <- logits

``"mlp"`` (:class:`MLP`), the same inputs flattened to 784::

    dense 256 -> GELU -> dropout 0.2
    dense 128 -> GELU -> dropout 0.2
    dense 128 -> GELU                         <- the feature layer (128-d)
    dropout 0.2 (training only) -> dense 10   <- logits

Each network's trained parameters ship in ``jaxdiff/fidelity/assets/`` (Flax msgpack:
``classifier.msgpack`` for the LeNet, ``mlp.msgpack`` for the MLP) with a JSON card of the same
stem (sha256 of the msgpack, network name, feature dimension, test accuracy, architecture,
feature layer, training command). :func:`load_classifier` checks the checksum before use.

Training goes through the diffusion models' trainer: :func:`classifier_loss` is a
``loss_fn(params, batch, key)`` for :func:`jaxdiff.train.make_train_step`, and
:func:`make_train_epoch` scans it over a permutation of device-resident ``uint8`` images with
:func:`jaxdiff.train.make_run_steps`, keys derived by ``fold_in`` (so a run is a function of
its seed); :func:`train_classifier` is the whole run. Augmentation is a random integer shift
of up to ``max_shift`` pixels.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.data import normalize
from jaxdiff.losses import LossFn
from jaxdiff.models.layers import Conv
from jaxdiff.paths import atomic_write
from jaxdiff.train import TrainState, init_train_state, make_run_steps, make_train_step

ASSET_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_PARAMS = ASSET_DIR / "classifier.msgpack"
DEFAULT_CARD = ASSET_DIR / "classifier.json"
FEATURE_DIM = 128
NUM_CLASSES = 10


#: Name of the default feature network (the one every published number uses).
DEFAULT_FEATURES = "lenet"


class ClassifierChecksumError(ValueError):
    """Raised when the classifier parameter file does not match its recorded sha256."""


class ConvSame(Conv):
    """The classifier's convolution: :class:`jaxdiff.models.layers.Conv` with LeCun init.

    A subclass only so that its parameters keep the names the shipped asset uses
    (``ConvSame_0``, ...); it convolves through :func:`jaxdiff.kernels.get_conv` like the
    diffusion models (``"auto"``: the fastest tested path for the backend).
    """

    init: str = "lecun"


def _avg_pool2(x: jax.Array) -> jax.Array:
    """2x2 average pooling, stride 2, dropping an odd last row/column (``(B, H, W, C)``).

    Written as a reshape-mean: its gradient is a broadcast, far cheaper on XLA CPU than the
    ``select_and_scatter`` of max pooling.
    """
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class _FeaturesAndHead(nn.Module):
    """A classifier: a feature layer, then dropout and a dense layer; ``(features, logits)``.

    Subclasses have the fields ``dropout`` and ``num_classes`` and define :meth:`_features`.
    The head is created after the feature layers, in the same scope, so its parameters take
    the next names (``Dense_i``) as in a single method.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Classify ``x``.

        Args:
            x: Images ``float32 (B, 28, 28, 1)`` in the model scale.
            train: Apply dropout (needs a ``"dropout"`` rng).

        Returns:
            ``(features (B, features_dim), logits (B, num_classes))``, ``float32``.
        """
        feats = self._features(x, train)
        h = nn.Dropout(self.dropout, deterministic=not train)(feats)
        logits = nn.Dense(self.num_classes)(h)
        return feats, logits

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        """The feature layer's output ``(B, features_dim)``, built in ``__call__``'s scope."""
        raise NotImplementedError


class LeNet(_FeaturesAndHead):
    """Small LeNet-style classifier; returns ``(features, logits)``.

    Attributes:
        features_dim: Width of the penultimate (feature) layer.
        num_classes: Number of output classes.
        dropout: Dropout rate applied to the features during training only.
        conv_impl: Convolution implementation name (see :mod:`jaxdiff.kernels.registry`).
    """

    features_dim: int = FEATURE_DIM
    num_classes: int = NUM_CLASSES
    dropout: float = 0.3
    conv_impl: str = "auto"

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        """Three convolution + ReLU + 2x2 average-pool stages, then a dense ReLU layer."""
        for width, k in ((32, 5), (64, 3), (64, 3)):
            x = ConvSame(width, k, impl=self.conv_impl)(x)
            x = nn.relu(x)
            x = _avg_pool2(x)
        x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(self.features_dim)(x))


class MLP(_FeaturesAndHead):
    """A fully connected classifier on flattened pixels; returns ``(features, logits)``.

    Attributes:
        hidden: Widths of the hidden layers before the feature layer.
        features_dim: Width of the last hidden (feature) layer.
        num_classes: Number of output classes.
        dropout: Dropout rate after every hidden layer, during training only.
    """

    hidden: tuple[int, ...] = (256, 128)
    features_dim: int = FEATURE_DIM
    num_classes: int = NUM_CLASSES
    dropout: float = 0.2

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        """Dense GELU layers with dropout, then the dense GELU feature layer."""
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            h = nn.gelu(nn.Dense(width)(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.gelu(nn.Dense(self.features_dim)(h))


class FeatureNetwork(NamedTuple):
    """A registered feature network: how to build it and where its trained parameters live.

    Attributes:
        name: Registry name (``--features`` / ``--arch`` value).
        module: Zero-argument constructor of the Flax module (returns ``(features, logits)``).
        params_file: The shipped ``.msgpack``; its card is the same stem with ``.json``.
        feature_dim: Width of the feature layer.
        architecture: One-line description of the layers (written into the card).
        feature_layer: Which layer the features are (written into the card).
    """

    name: str
    module: Callable[[], nn.Module]
    params_file: Path
    feature_dim: int
    architecture: str
    feature_layer: str


#: The feature networks by name. ``"lenet"`` is the default.
FEATURE_NETWORKS: dict[str, FeatureNetwork] = {
    "lenet": FeatureNetwork(
        "lenet",
        LeNet,
        DEFAULT_PARAMS,
        FEATURE_DIM,
        "conv5x5-32 relu avgpool2 | conv3x3-64 relu avgpool2 | conv3x3-64 relu avgpool2 | "
        "flatten 576 | dense 128 relu (features) | dropout 0.3 | dense 10",
        "dense 128 after ReLU (penultimate layer)",
    ),
    "mlp": FeatureNetwork(
        "mlp",
        MLP,
        ASSET_DIR / "mlp.msgpack",
        FEATURE_DIM,
        "flatten 784 | dense 256 gelu dropout 0.2 | dense 128 gelu dropout 0.2 | "
        "dense 128 gelu (features) | dropout 0.2 | dense 10",
        "dense 128 after GELU (penultimate layer)",
    ),
}


def feature_network(name: str) -> FeatureNetwork:
    """Look a feature network up by name.

    Args:
        name: A key of :data:`FEATURE_NETWORKS` (``"lenet"`` or ``"mlp"``).

    Returns:
        Its :class:`FeatureNetwork`.

    Raises:
        ValueError: If ``name`` is not registered; the message lists the choices.
    """
    if name not in FEATURE_NETWORKS:
        raise ValueError(
            f"unknown feature network {name!r}; choose one of: {', '.join(FEATURE_NETWORKS)}."
        )
    return FEATURE_NETWORKS[name]


class Classifier(NamedTuple):
    """A loaded feature network.

    Attributes:
        params: Parameters of the network's module.
        card: The metadata card (accuracy, architecture, feature layer, sha256, ...).
        network: Its registry name (:data:`FEATURE_NETWORKS`).
    """

    params: Any
    card: dict
    network: str = DEFAULT_FEATURES


def make_classifier_optimizer(lr: float, total_steps: int) -> optax.GradientTransformation:
    """Adam with a cosine decay of the learning rate to 1% over ``total_steps``.

    Args:
        lr: Peak learning rate.
        total_steps: Steps of the whole run (the decay horizon).

    Returns:
        An optax transformation.
    """
    if lr <= 0 or total_steps <= 0:
        raise ValueError(f"lr and total_steps must be positive, got {lr}, {total_steps}.")
    return optax.adam(optax.cosine_decay_schedule(lr, total_steps, alpha=0.01))


def init_state(
    key: jax.Array, tx: optax.GradientTransformation, network: str = DEFAULT_FEATURES
) -> TrainState:
    """Initialise parameters and optimiser state.

    Args:
        key: PRNG key.
        tx: The optimiser from :func:`make_classifier_optimizer`.
        network: Registry name of the network (:data:`FEATURE_NETWORKS`).

    Returns:
        A fresh :class:`jaxdiff.train.TrainState` at step 0 (no EMA).
    """
    module = feature_network(network).module()
    params = module.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32))
    return init_train_state(params, tx)


def _shift_one(image: jax.Array, key: jax.Array, max_shift: int) -> jax.Array:
    """Shift one ``uint8 (28, 28)`` image by a random integer offset, zero (black) fill."""
    if max_shift == 0:
        return image
    padded = jnp.pad(image, max_shift)
    off = jax.random.randint(key, (2,), 0, 2 * max_shift + 1)
    return jax.lax.dynamic_slice(padded, (off[0], off[1]), image.shape)


def loss_fn(
    params: Any,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    network: str = DEFAULT_FEATURES,
) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy of a batch, with dropout.

    Args:
        params: Network parameters.
        images: ``float32 (B, 28, 28, 1)`` in the model scale.
        labels: ``int (B,)`` class labels.
        key: Dropout key.
        network: Registry name of the network (:data:`FEATURE_NETWORKS`).

    Returns:
        ``(loss, accuracy)`` scalars.
    """
    module = feature_network(network).module()
    _, logits = module.apply(params, images, train=True, rngs={"dropout": key})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits.argmax(-1) == labels).mean()


def classifier_loss(max_shift: int = 2, network: str = DEFAULT_FEATURES) -> LossFn:
    """The training loss in the trainer's form: ``loss_fn(params, batch, key)``.

    Args:
        max_shift: Maximum random shift (pixels, each axis) for augmentation; 0 disables it.
        network: Registry name of the network (:data:`FEATURE_NETWORKS`).

    Returns:
        ``loss_fn(params, (images_u8 (B, 28, 28), labels (B,)), key) -> (loss,
        {"accuracy"})``: the batch is shifted (``split(key)[0]``, one key per image),
        scaled by :func:`jaxdiff.data.normalize` and scored by :func:`loss_fn` with dropout
        (``split(key)[1]``).
    """

    def loss(params, batch, key):
        images, labels = batch
        k_aug, k_drop = jax.random.split(key)
        shift_keys = jax.random.split(k_aug, images.shape[0])
        images = jax.vmap(_shift_one, in_axes=(0, 0, None))(images, shift_keys, max_shift)
        labels = labels.astype(jnp.int32)
        value, acc = loss_fn(params, normalize(images), labels, k_drop, network)
        return value, {"accuracy": acc}

    return loss


def _labelled_batch(data: tuple[jax.Array, jax.Array], idx: jax.Array):
    images, labels = data
    return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)


def make_train_epoch(
    tx: optax.GradientTransformation,
    batch_size: int = 128,
    max_shift: int = 2,
    network: str = DEFAULT_FEATURES,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, dict]]:
    """Build the function that trains one epoch: one jitted scan of the shared trainer.

    The steps are :func:`jaxdiff.train.make_train_step` over :func:`classifier_loss`,
    scanned by :func:`jaxdiff.train.make_run_steps` over device-resident ``uint8`` images.

    Args:
        tx: Optimiser.
        batch_size: Batch size; the last partial batch is dropped.
        max_shift: Maximum random shift (pixels, each axis) for augmentation; 0 disables it.
        network: Registry name of the network (:data:`FEATURE_NETWORKS`).

    Returns:
        ``train_epoch(state, images_u8 (N, 28, 28), labels (N,), key) -> (state, metrics)``
        where metrics holds the epoch's mean ``loss`` and ``accuracy`` (on augmented batches).
        The epoch's permutation uses ``fold_in(key, 0)``; step ``s`` uses
        ``fold_in(fold_in(key, 1), s)``.
    """
    step = make_train_step(classifier_loss(max_shift, network), tx)
    run_steps = make_run_steps(step, get_batch=_labelled_batch, donate=False)

    def train_epoch(state, images_u8, labels, key):
        n = images_u8.shape[0]
        steps = n // batch_size
        if steps == 0:
            raise ValueError(f"{n} images is fewer than one batch of {batch_size}.")
        perm = jax.random.permutation(jax.random.fold_in(key, 0), n)[: steps * batch_size]
        perm = perm.reshape(steps, batch_size)
        state, m = run_steps(state, (images_u8, labels), perm, jax.random.fold_in(key, 1))
        return state, {"loss": m["loss"].mean(), "accuracy": m["accuracy"].mean()}

    return train_epoch


def train_classifier(
    images: Any,
    labels: Any,
    epochs: int = 6,
    seed: int = 0,
    lr: float = 2e-3,
    batch_size: int = 128,
    max_shift: int = 2,
    log: Callable[[dict], None] | None = None,
    network: str = DEFAULT_FEATURES,
) -> TrainState:
    """Train a feature network from scratch (the recipe of the shipped assets).

    Keys: ``key = jax.random.key(seed)``; the parameters start from ``fold_in(key, 0)`` and
    epoch ``e`` (1-based) runs :func:`make_train_epoch` with ``fold_in(key, e)``.

    Args:
        images: ``uint8`` training images ``(N, 28, 28)``.
        labels: Their labels ``(N,)``.
        epochs: Epochs.
        seed: Seed of every draw.
        lr: Peak learning rate (:func:`make_classifier_optimizer`).
        batch_size: Images per step.
        max_shift: Augmentation shift (pixels).
        log: Called after each epoch with ``{"loss", "accuracy", "epoch", "seconds"}``.
        network: Registry name of the network (:data:`FEATURE_NETWORKS`).

    Returns:
        The final :class:`jaxdiff.train.TrainState`.
    """
    import time

    images, labels = jnp.asarray(images), jnp.asarray(labels)
    tx = make_classifier_optimizer(lr, epochs * (images.shape[0] // batch_size))
    key = jax.random.key(seed)
    state = init_state(jax.random.fold_in(key, 0), tx, network)
    train_epoch = make_train_epoch(tx, batch_size, max_shift, network)
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        state, m = train_epoch(state, images, labels, jax.random.fold_in(key, epoch))
        if log is not None:
            rec = {k: float(v) for k, v in m.items()}
            log(dict(rec, epoch=epoch, seconds=round(time.time() - t0, 1)))
    return state


@functools.partial(jax.jit, static_argnames="network")
def _apply(params: Any, x: jax.Array, network: str) -> tuple[jax.Array, jax.Array]:
    feats, logits = feature_network(network).module().apply(params, x)
    return feats, jax.nn.softmax(logits, axis=-1)


def _check_images(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3 and x.shape[1:] == (28, 28):
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
        raise ValueError(
            f"expected images of shape (N, 28, 28, 1) or (N, 28, 28) in the model scale, "
            f"got {x.shape}; use jaxdiff.data.normalize for uint8 MNIST."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or inf; check the sampler output.")
    return x


def apply_batched(
    params: Any, x: Any, batch_size: int = 1000, network: str = DEFAULT_FEATURES
) -> tuple[np.ndarray, np.ndarray]:
    """Run the classifier over ``x`` in fixed-size chunks (one compilation).

    Args:
        params: Classifier parameters.
        x: Images ``(N, 28, 28, 1)`` or ``(N, 28, 28)`` in the model scale.
        batch_size: Chunk size; the last chunk is padded, so only one shape is compiled.
        network: Registry name of the network the parameters belong to.

    Returns:
        ``(features float32 (N, feature_dim), probabilities float32 (N, 10))`` as numpy
        arrays (``feature_dim`` is 128 for both registered networks).
    """
    spec = feature_network(network)
    x = _check_images(x)
    n = x.shape[0]
    feats, probs = [], []
    for start in range(0, n, batch_size):
        chunk = x[start : start + batch_size]
        m = chunk.shape[0]
        if m < batch_size and n > batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - m, 28, 28, 1), np.float32)])
        f, p = _apply(params, jnp.asarray(chunk), network=spec.name)
        feats.append(np.asarray(f)[:m])
        probs.append(np.asarray(p)[:m])
    if not feats:
        return (
            np.zeros((0, spec.feature_dim), np.float32),
            np.zeros((0, NUM_CLASSES), np.float32),
        )
    return np.concatenate(feats), np.concatenate(probs)


def accuracy(
    params: Any,
    images: Any,
    labels: Any,
    batch_size: int = 1000,
    network: str = DEFAULT_FEATURES,
) -> float:
    """Top-1 accuracy of the classifier.

    Args:
        params: Classifier parameters.
        images: ``(N, 28, 28, 1)`` model-scale images.
        labels: ``(N,)`` integer labels.
        batch_size: Chunk size.
        network: Registry name of the network the parameters belong to.

    Returns:
        Fraction of correctly classified images.
    """
    _, probs = apply_batched(params, images, batch_size, network)
    return float((probs.argmax(-1) == np.asarray(labels)).mean())


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file.

    Args:
        path: File to hash.

    Returns:
        Lower-case hex digest.
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_classifier(
    params: Any,
    card: dict,
    path: str | Path | None = None,
    network: str = DEFAULT_FEATURES,
) -> dict:
    """Write parameters as Flax msgpack and a JSON card with their sha256 beside them.

    Both files are written atomically (a temporary file, then a rename).

    Args:
        params: Classifier parameters.
        card: Metadata (accuracy, training command, ...); ``sha256``, ``network``,
            ``feature_dim``, ``architecture``, ``feature_layer`` and ``params_file`` are
            filled in.
        path: Destination ``.msgpack`` (default: the network's shipped file); the card goes to
            the same stem with ``.json``.
        network: Registry name of the network the parameters belong to.

    Returns:
        The card as written.
    """
    spec = feature_network(network)
    path = spec.params_file if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    atomic_write(path, flax.serialization.to_bytes(params))
    card = dict(card)
    card.update(
        params_file=path.name,
        sha256=sha256_file(path),
        num_params=int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params))),
        network=spec.name,
        feature_dim=spec.feature_dim,
        architecture=spec.architecture,
        feature_layer=spec.feature_layer,
        input="float32 (B, 28, 28, 1), x / 255 - 0.5 in [-0.5, 0.5]",
    )
    atomic_write(path.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    return card


def load_classifier(path: str | Path | None = None, network: str | None = None) -> Classifier:
    """Load a feature network, verifying its sha256 against its JSON card.

    Args:
        path: A ``.msgpack`` written by :func:`save_classifier`; default: the shipped file of
            ``network``.
        network: Registry name (:data:`FEATURE_NETWORKS`); default: the card's ``network``
            (cards without one are LeNet's), or ``"lenet"`` when ``path`` is not given either.

    Returns:
        A :class:`Classifier` (params, card and network name).

    Raises:
        ValueError: If ``network`` is not registered (the message lists the choices), or the
            file holds parameters of another network.
        FileNotFoundError: If the parameter file or its card is missing.
        ClassifierChecksumError: If the file's sha256 differs from the card's.
    """
    if network is not None:
        feature_network(network)  # an unknown name fails before any file is read
    if path is None:
        path = feature_network(network or DEFAULT_FEATURES).params_file
    path = Path(path)
    card_path = path.with_suffix(".json")
    for p in (path, card_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"classifier file {p} is missing; reinstall jaxdiff or retrain it with "
                f"`python experiments/train_classifier.py --arch {network or DEFAULT_FEATURES} "
                f"--out {path}`."
            )
    card = json.loads(card_path.read_text())
    recorded = card.get("network", DEFAULT_FEATURES)
    name = recorded if network is None else network
    if recorded != name:
        raise ValueError(
            f"{card_path} describes a {recorded!r} network, not {name!r}; pass "
            f"network={recorded!r} or the {name!r} file."
        )
    spec = feature_network(name)
    got = sha256_file(path)
    if got != card.get("sha256"):
        raise ClassifierChecksumError(
            f"classifier parameters {path} have sha256 {got}, but {card_path.name} records "
            f"{card.get('sha256')}: the file is corrupted or was replaced. Reinstall jaxdiff "
            f"or retrain with `python experiments/train_classifier.py --arch {name}`."
        )
    zeros = jnp.zeros((1, 28, 28, 1))
    template = jax.eval_shape(spec.module().init, jax.random.key(0), zeros)
    try:
        params = flax.serialization.from_bytes(template, path.read_bytes())
        shapes_ok = jax.tree_util.tree_all(
            jax.tree_util.tree_map(lambda t, p: t.shape == np.shape(p), template, params)
        )
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{path} does not hold {name} parameters ({err}).") from err
    if not shapes_ok:
        raise ValueError(f"{path} holds parameters of other shapes than {name}'s.")
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return Classifier(params, card, name)


@functools.cache
def default_classifier(network: str = DEFAULT_FEATURES) -> Classifier:
    """Return a shipped feature network, loaded (and checksum-verified) once per process.

    Args:
        network: Registry name (:data:`FEATURE_NETWORKS`); default the LeNet.

    Returns:
        The shipped :class:`Classifier` of that name.

    Raises:
        ValueError: If ``network`` is not registered (the message lists the choices).
        ClassifierChecksumError: If the shipped file's sha256 differs from its card's.
    """
    return load_classifier(network=network)


def features(x: Any, classifier: Classifier | None = None, batch_size: int = 1000) -> np.ndarray:
    """Penultimate-layer features of images.

    Args:
        x: Images ``(N, 28, 28, 1)`` (or ``(N, 28, 28)``) in the model scale.
        classifier: Feature network; default: the shipped LeNet.
        batch_size: Chunk size.

    Returns:
        ``float32 (N, feature_dim)`` (128 for both registered networks).
    """
    clf = default_classifier() if classifier is None else classifier
    return apply_batched(clf.params, x, batch_size, clf.network)[0]


def predict_proba(
    x: Any, classifier: Classifier | None = None, batch_size: int = 1000
) -> np.ndarray:
    """Class probabilities of images.

    Args:
        x: Images ``(N, 28, 28, 1)`` (or ``(N, 28, 28)``) in the model scale.
        classifier: Feature network; default: the shipped LeNet.
        batch_size: Chunk size.

    Returns:
        ``float32 (N, 10)``, rows summing to one.
    """
    clf = default_classifier() if classifier is None else classifier
    return apply_batched(clf.params, x, batch_size, clf.network)[1]
