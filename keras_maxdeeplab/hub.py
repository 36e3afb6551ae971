"""Preset loading and publishing: names, folders and Hugging Face handles.

`MaXDeepLab.from_preset`, `MaXDeepLabBackbone.from_preset` and their kMaX
counterparts run `load_task` / `load_backbone`:
* a name of `MAX_DEEPLAB_PRESETS` (or an alias) or of `KMAX_DEEPLAB_PRESETS`
  (the entry's `family` says which model and converter) builds the architecture from
  the configs shipped in this package, without any download, and takes the
  weights from the first of: (1) the converted copy in the local cache
  (`conversion.preset_cache`); (2) the preset's Hugging Face repository (its
  `hf://` handle), once published; (3) deeplab2's published archive,
  downloaded, converted and cached on first use (`fetch_preset`);
* a local preset folder or an `hf://` handle is first checked here (files
  present, a MaX-DeepLab config; `hf://` files are fetched with
  `huggingface_hub.hf_hub_download`, which also serves the local cache
  offline), then built by keras-hub's loader; the weights are read here so
  that a truncated file or another model's weights fail with a clear error;
* a name of `EMBEDDED_PRESETS` (shipped inside the package) is its folder;
* other keras-hub handles (`kaggle://`, `gs://`, ...) go to keras-hub as they
  are.

`upload_preset` publishes a preset folder with this package's model card
(`write_model_card`).
"""

import contextlib
import json
import os
import stat
import typing

import huggingface_hub
import keras
import keras_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors

from keras_maxdeeplab.conversion.archive import DownloadError
from keras_maxdeeplab.conversion.preset_cache import CHECKPOINT_URL_VARIABLE
from keras_maxdeeplab.conversion.preset_cache import archive_url
from keras_maxdeeplab.conversion.preset_cache import cached_preset
from keras_maxdeeplab.conversion.preset_cache import cached_preset_dir
from keras_maxdeeplab.conversion.preset_cache import convert_on_first_use
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_backbone
from keras_maxdeeplab.models.kmax_deeplab.kmax_builder import build_kmax_model
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab import KMaXDeepLab
from keras_maxdeeplab.models.kmax_deeplab.kmax_deeplab_backbone import KMaXDeepLabBackbone
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import KMAX_DEEPLAB_PRESETS
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import get_kmax_preset
from keras_maxdeeplab.models.kmax_deeplab.kmax_presets import kmax_task_overrides
from keras_maxdeeplab.models.max_deeplab.max_deeplab import MaXDeepLab
from keras_maxdeeplab.models.max_deeplab.max_deeplab_backbone import MaXDeepLabBackbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_builder import build_backbone
from keras_maxdeeplab.models.max_deeplab.max_deeplab_builder import build_model
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import canonical_preset_name
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import embedded_preset_folder
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import get_preset
from keras_maxdeeplab.models.max_deeplab.max_deeplab_presets import preset_names
from keras_maxdeeplab.models.max_deeplab.model_card import write_model_card

HF_PREFIX = "hf://"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
IMAGE_CONVERTER_FILE = "image_converter.json"
_FOLDER_HINT = (
    "a preset folder holds config.json and model.weights.h5 (plus task.json and "
    "task.weights.h5 for a full model), as `save_to_preset` or `maxdeeplab convert` write them"
)


class PresetUnavailableError(ValueError):
    """A preset's files are not where they were looked for (offline and not
    cached, or not published); other sources may still have them. `reason`
    says why in a few words."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


class PresetNotFoundError(ValueError):
    """No place this package looked in has the preset's weights."""


class Family(typing.NamedTuple):
    """A model family of the preset tables (an entry's `family`): its classes
    and how a preset name builds its architecture."""

    title: str
    backbone_cls: type
    task_cls: type
    # (entry, keyword overrides, class) -> an unloaded backbone / task.
    build_backbone: typing.Callable
    build_task: typing.Callable


FAMILIES = {
    "max_deeplab": Family(
        "MaX-DeepLab",
        MaXDeepLabBackbone,
        MaXDeepLab,
        lambda entry, kwargs, cls: build_backbone(entry["config"], entry["crop_size"], kwargs, cls),
        lambda entry, kwargs, cls: build_model(
            entry["config"],
            entry["crop_size"],
            {"postprocess_options": dict(entry["postprocess_options"]), **kwargs},
            cls,
        ),
    ),
    "kmax_deeplab": Family(
        "kMaX-DeepLab",
        KMaXDeepLabBackbone,
        KMaXDeepLab,
        lambda entry, kwargs, cls: build_kmax_backbone(
            entry["config"], entry["crop_size"], kwargs, cls
        ),
        lambda entry, kwargs, cls: build_kmax_model(
            entry["config"],
            entry["crop_size"],
            overrides={**kmax_task_overrides(entry), **kwargs},
            cls=cls,
        ),
    ),
}


def family_of(cls):
    """The `FAMILIES` entry whose backbone or task `cls` is (or subclasses).

    Example:
    >>> family_of(KMaXDeepLab).title
    'kMaX-DeepLab'
    """
    for family in FAMILIES.values():
        if issubclass(cls, (family.backbone_cls, family.task_cls)):
            return family
    raise ValueError(f"{cls.__name__} is not a model of this package's preset tables.")


def table_entry(name):
    """The entry of a preset name or alias in any family's table, or None."""
    return get_preset(name) or get_kmax_preset(name)


def all_preset_names():
    """Every name `from_preset` loads, MaX-DeepLab's then kMaX-DeepLab's."""
    return preset_names() + sorted(KMAX_DEEPLAB_PRESETS)


def resolve_preset(preset, title=None):
    """The table entry for a preset name or alias; None for a folder or a handle.

    `title` names the model asked for (e.g. "kMaX-DeepLab") in the error on an
    unknown name.

    Raises:
        ValueError: for anything else (listing the known preset names).

    Example:
    >>> resolve_preset("max_deeplab_s_coco")["handle"]
    'hf://keras-maxdeeplab/max_deeplab_s_coco_1025_400k'
    """
    if not isinstance(preset, str):
        raise ValueError(f"A preset is a name, a folder or a handle string; got {preset!r}.")
    entry = table_entry(preset)
    if entry is not None or "://" in preset or os.path.exists(preset):
        return entry
    raise ValueError(
        f"Unknown {title + ' ' if title else ''}preset {preset!r}: not a preset name, an existing folder or a handle such "
        f"as 'hf://org/name'. Known presets: {', '.join(all_preset_names())}."
    )


def _entry_for(cls, preset):
    """`resolve_preset`, refusing a name of another family than `cls`'s."""
    wanted = family_of(cls)
    entry = resolve_preset(preset, wanted.title)
    if entry is not None:
        family = FAMILIES[entry["family"]]
        if family is not wanted:
            raise ValueError(
                f"Preset {preset!r} is a {family.title} model; load it with "
                f"{family.task_cls.__name__}.from_preset, not {cls.__name__}.from_preset."
            )
    return entry


def task_class(preset):
    """The task class (`MaXDeepLab` or `KMaXDeepLab`) whose `from_preset`
    loads `preset`: a preset name's family, or the backbone class named by a
    folder's or `hf://` handle's config.json. Lets a caller (the CLI) take
    either generation without being told which.

    Raises:
        ValueError: an unknown name (listing the known ones), or a preset
            whose config.json is missing, unreadable or of no model of this
            package.

    Example:
    >>> task_class("kmax_r50_coco").__name__
    'KMaXDeepLab'
    """
    preset = embedded_preset_folder(preset) or preset
    entry = resolve_preset(preset)
    if entry is not None:
        return FAMILIES[entry["family"]].task_cls
    found = _registered_name(_file_getter(preset)(CONFIG_FILE), preset)
    for family in FAMILIES.values():
        if found == keras.saving.get_registered_name(family.backbone_cls):
            return family.task_cls
    known = ", ".join(keras.saving.get_registered_name(f.backbone_cls) for f in FAMILIES.values())
    raise ValueError(
        f"Preset {preset!r} holds another model: its {CONFIG_FILE} describes "
        f"{found or 'an unnamed object'!r}, not one of {known}."
    )


def fetch_hf_file(handle, filename, required=True):
    """Local path of one file of an `hf://org/name` preset: the Hugging Face
    cache's copy, downloaded first when the Hub is reachable.

    Returns None for an optional file the repository does not have.

    Raises:
        ValueError: the Hub is unreachable (no network or `HF_HUB_OFFLINE=1`)
            and the file is not cached; the repository or a required file
            does not exist; the handle is malformed.

    Example:
    >>> fetch_hf_file("hf://keras-maxdeeplab/max_deeplab_s_coco_641_400k", "config.json")
    """
    repo_id = handle[len(HF_PREFIX) :]
    try:
        return huggingface_hub.hf_hub_download(repo_id=repo_id, filename=filename)
    except hf_errors.LocalEntryNotFoundError as error:
        # Offline, a file known to be absent from the repository is cached as such.
        absent = huggingface_hub.try_to_load_from_cache(repo_id, filename)
        if absent is huggingface_hub._CACHED_NO_EXIST and not required:
            return None
        raise PresetUnavailableError(
            f"Cannot fetch {filename} of preset {handle!r}: the Hugging Face Hub is unreachable "
            "(no network connection, or HF_HUB_OFFLINE=1) and the file is not in the local "
            f"cache ({hf_constants.HF_HUB_CACHE}). Connect once to download the "
            "preset, or load a local preset folder instead: "
            "`MaXDeepLab.from_preset('path/to/folder')` (" + _FOLDER_HINT + ").",
            reason="Hugging Face Hub unreachable, not in its cache",
        ) from error
    except hf_errors.EntryNotFoundError as error:
        if not required:
            return None
        raise ValueError(
            f"Preset {handle!r} has no {filename}: the repository exists but is not a complete "
            f"keras-hub preset ({_FOLDER_HINT})."
        ) from error
    except hf_errors.RepositoryNotFoundError as error:
        raise PresetUnavailableError(
            f"No Hugging Face model repository {repo_id!r} for preset {handle!r} (a private or "
            "gated repository needs `hf auth login` first).",
            reason="no such Hugging Face repository",
        ) from error
    except hf_errors.HFValidationError as error:
        raise ValueError(
            f"{handle!r} is not a valid Hugging Face handle; expected 'hf://org/name'."
        ) from error


def _folder_file(folder, filename, required):
    path = os.path.join(folder, filename)
    if os.path.isfile(path):
        return path
    if required:
        raise ValueError(f"Preset folder {folder!r} has no {filename}; {_FOLDER_HINT}.")
    return None


def _check_regular_files(folder):
    # keras-hub opens whichever files it looks for: a FIFO or device there
    # would block or stream forever.
    for name in sorted(os.listdir(folder)):
        mode = os.stat(os.path.join(folder, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ValueError(
                f"Preset folder {folder!r} holds {name!r}, which is not a regular file (a FIFO, "
                "device or socket); a preset folder holds only files written by save_to_preset."
            )


def _file_getter(preset):
    """`get(filename, required=True)`: the local path of one file of a folder
    (checked for non-regular files first) or `hf://` preset; None for a
    missing optional file."""
    if preset.startswith(HF_PREFIX):
        return lambda filename, required=True: fetch_hf_file(preset, filename, required)
    _check_regular_files(preset)
    return lambda filename, required=True: _folder_file(preset, filename, required)


def _registered_name(path, preset):
    """The `registered_name` of a preset's JSON file (None if it has none)."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} of preset {preset!r} is not readable JSON: {error}") from error
    return config.get("registered_name") if isinstance(config, dict) else None


def _check_class(path, expected, preset):
    found = _registered_name(path, preset)
    if found != expected:
        raise ValueError(
            f"Preset {preset!r} holds another model: {os.path.basename(path)} describes "
            f"{found or 'an unnamed object'!r}, not {expected!r}. Pass a preset of that model."
        )


def preset_files(preset, load_weights, task, family=FAMILIES["max_deeplab"]):
    """Checks a folder or `hf://` preset and returns its local file paths.

    Returns `{filename: path or None}` for config.json and, where loaded,
    model.weights.h5, task.json, task.weights.h5 and (without task.json)
    image_converter.json; None: the preset has no such optional file, e.g. no
    task for a backbone preset.

    Raises:
        ValueError: a required file is missing or cannot be fetched, or the
            preset is not one of `family` (default: MaX-DeepLab).
    """
    get = _file_getter(preset)
    files = {CONFIG_FILE: get(CONFIG_FILE)}
    _check_class(files[CONFIG_FILE], keras.saving.get_registered_name(family.backbone_cls), preset)
    if load_weights:
        files[WEIGHTS_FILE] = get(WEIGHTS_FILE)
    if task:
        files[TASK_CONFIG_FILE] = get(TASK_CONFIG_FILE, required=False)
        if files[TASK_CONFIG_FILE] is not None:
            _check_class(
                files[TASK_CONFIG_FILE], keras.saving.get_registered_name(family.task_cls), preset
            )
            if load_weights:
                # Without them keras-hub would quietly keep freshly initialised heads.
                files[TASK_WEIGHTS_FILE] = get(TASK_WEIGHTS_FILE)
        else:
            files[IMAGE_CONVERTER_FILE] = get(IMAGE_CONVERTER_FILE, required=False)
    return files


@contextlib.contextmanager
def _reading(preset, path):
    try:
        yield
    except OSError as error:
        raise ValueError(
            f"Cannot read {path} of preset {preset!r}: the file is truncated or not a Keras "
            f"weights file ({error}). Download or convert the preset again."
        ) from error
    except ValueError as error:
        # Keras' message runs on with variable values; its shape line says it all.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        summary = next((line for line in lines if "shape" in line), lines[0])
        summary = summary.split(" Target variable:")[0]
        raise ValueError(
            f"The weights in {path} do not fit the architecture of preset {preset!r} (a config "
            f"or weights file from another model?). Keras reports: {summary}"
        ) from error


def _load_weights(model, files, preset):
    backbone = getattr(model, "backbone", model)
    with _reading(preset, files[WEIGHTS_FILE]):
        backbone.load_weights(files[WEIGHTS_FILE])
    if files.get(TASK_WEIGHTS_FILE):
        # keras-hub's `load_task_weights`, less the optimizer: a preset holds
        # weights, and the optimizer the task compiled for itself would warn
        # where the saved one differs (e.g. loss scaling under mixed_float16).
        skipped = list(backbone._flatten_layers())
        if getattr(model, "optimizer", None) is not None:
            skipped.append(model.optimizer)
        with _reading(preset, files[TASK_WEIGHTS_FILE]):
            keras.saving.load_weights(model, files[TASK_WEIGHTS_FILE], objects_to_skip=skipped)


def _is_checked(preset):
    return preset.startswith(HF_PREFIX) or "://" not in preset


def _with_loadable_dtype(config_file, kwargs):
    """`kwargs` with the current global dtype policy for a preset saved under a
    mixed-precision one (e.g. trained with `--precision bf16`).

    keras-hub 0.32 loads float-policy presets under the current global policy,
    but its check `is_float_dtype("mixed_bfloat16")` raises on mixed names;
    passing the policy it would choose avoids the check. The weights are
    float32 either way.
    """
    if kwargs.get("dtype") is not None:
        return kwargs
    with open(config_file, encoding="utf-8") as f:
        saved = (json.load(f).get("config") or {}).get("dtype")
    name = saved.get("config", {}).get("name", "") if isinstance(saved, dict) else ""
    if not name.startswith("mixed_"):
        return kwargs
    return {**kwargs, "dtype": keras.config.dtype_policy().name}


def _default_preprocessor(cls, image_shape):
    converter_cls = cls.preprocessor_cls.image_converter_cls
    return cls.preprocessor_cls(image_converter=converter_cls(image_size=tuple(image_shape[:2])))


def _weights_files(folder_or_handle, entry, task):
    """model.weights.h5 (and task.weights.h5 of a task preset) of a folder or handle."""
    if folder_or_handle.startswith(HF_PREFIX):

        def get(filename):
            return fetch_hf_file(folder_or_handle, filename)

    else:

        def get(filename):
            return _folder_file(folder_or_handle, filename, required=True)

    files = {WEIGHTS_FILE: get(WEIGHTS_FILE)}
    if task and entry["kind"] == "task":
        files[TASK_WEIGHTS_FILE] = get(TASK_WEIGHTS_FILE)
    return files


def fetch_preset(preset, checkpoint_base_url=None, task=True):
    """The local weights files of a preset name, fetched once if needed.

    Looks in order in (1) the local cache of converted presets; (2) the
    preset's Hugging Face repository (through the Hugging Face cache);
    (3) deeplab2's archive, downloaded from `checkpoint_base_url` (default:
    the `KERAS_MAXDEEPLAB_CHECKPOINT_URL` environment variable, else where
    deeplab2 publishes it), converted and stored in the cache. A second call
    reads the cache and touches no network.

    Args:
        preset: a name of `MAX_DEEPLAB_PRESETS` (or an alias) or of
            `KMAX_DEEPLAB_PRESETS`.
        checkpoint_base_url: optional mirror of deeplab2's checkpoint folder.
        task: False fetches the backbone weights only.

    Returns:
        `{"model.weights.h5": path, "task.weights.h5": path}` (the second for
        task presets with `task=True` only).

    Raises:
        PresetNotFoundError: none of the three places has the weights (e.g.
            offline with nothing cached): the message names each place and
            the fixes.
        ValueError: a downloaded archive is corrupt, unsafe or of another
            model (nothing is cached).

    Example:
    >>> fetch_preset("max_deeplab_s_coco")["model.weights.h5"]  # ~/.keras/keras_maxdeeplab/presets/...
    """
    entry = resolve_preset(preset)
    if entry is None:
        raise ValueError(f"fetch_preset takes a preset name; {preset!r} is a folder or handle.")
    name = canonical_preset_name(preset)
    folder = cached_preset(name)
    if folder is not None:
        return _weights_files(folder, entry, task)
    try:
        return _weights_files(entry["handle"], entry, task)
    except PresetUnavailableError as error:
        hub_reason = error.reason
    url = archive_url(entry, checkpoint_base_url)
    try:
        folder = convert_on_first_use(name, entry, checkpoint_base_url)
    except DownloadError as error:
        raise PresetNotFoundError(
            f"Preset {name!r} could not be fetched from any of: (1) the local cache "
            f"{cached_preset_dir(name)} (no converted copy yet); (2) {entry['handle']} "
            f"({hub_reason}); (3) deeplab2's archive {url} ({error}). Connect to the internet "
            "once (the archive is then converted and cached for offline use), or set "
            f"{CHECKPOINT_URL_VARIABLE} (or pass checkpoint_base_url=) to a mirror of "
            "deeplab2's checkpoints, or pass a local preset folder to from_preset."
        ) from error
    return _weights_files(folder, entry, task)


def cached_hf_files(entry):
    """The weights files of a preset's Hugging Face repository that are
    already in the Hugging Face cache, or None if any is missing (no network)."""
    repo_id = entry["handle"][len(HF_PREFIX) :]
    names = [WEIGHTS_FILE] + ([TASK_WEIGHTS_FILE] if entry["kind"] == "task" else [])
    files = {name: huggingface_hub.try_to_load_from_cache(repo_id, name) for name in names}
    return files if all(isinstance(path, str) for path in files.values()) else None


def _name_files(preset, entry, load_weights, task, checkpoint_base_url):
    if not load_weights:
        return {}
    return fetch_preset(preset, checkpoint_base_url, task=task)


def _checkpoint_base_url(preset, kwargs):
    base_url = kwargs.pop("checkpoint_base_url", None)
    if base_url is not None and table_entry(preset) is None:
        raise ValueError(
            "checkpoint_base_url applies to preset names (their deeplab2 archives), "
            f"not to {preset!r}."
        )
    return base_url


def load_backbone(cls, keras_hub_from_preset, preset, load_weights, kwargs):
    """`MaXDeepLabBackbone.from_preset`; `keras_hub_from_preset` is keras-hub's."""
    kwargs = dict(kwargs)
    preset = embedded_preset_folder(preset) or preset
    base_url = _checkpoint_base_url(preset, kwargs)
    entry = _entry_for(cls, preset)
    if entry is not None:
        files = _name_files(preset, entry, load_weights, False, base_url)
        backbone = FAMILIES[entry["family"]].build_backbone(entry, kwargs, cls)
    elif _is_checked(preset):
        files = preset_files(preset, load_weights, task=False, family=family_of(cls))
        kwargs = _with_loadable_dtype(files[CONFIG_FILE], kwargs)
        backbone = keras_hub_from_preset(preset, load_weights=False, **kwargs)
    else:
        return keras_hub_from_preset(preset, load_weights=load_weights, **kwargs)
    if load_weights:
        _load_weights(backbone, files, preset)
    return backbone


def load_task(cls, keras_hub_from_preset, preset, load_weights, kwargs):
    """`MaXDeepLab.from_preset`; `keras_hub_from_preset` is keras-hub's.

    `categories` / `num_classes` are applied after loading the preset as
    saved, so that every weight that does not depend on the classes is kept.
    """
    kwargs = dict(kwargs)
    classes = {k: kwargs.pop(k) for k in ("categories", "num_classes") if k in kwargs}
    preset = embedded_preset_folder(preset) or preset
    base_url = _checkpoint_base_url(preset, kwargs)
    entry = _entry_for(cls, preset)
    if entry is not None:
        files = _name_files(preset, entry, load_weights, True, base_url)
        model = FAMILIES[entry["family"]].build_task(entry, kwargs, cls)
    elif _is_checked(preset):
        files = preset_files(preset, load_weights, task=True, family=family_of(cls))
        kwargs = _with_loadable_dtype(files[CONFIG_FILE], kwargs)
        no_converter = files[TASK_CONFIG_FILE] is None and files[IMAGE_CONVERTER_FILE] is None
        if no_converter and cls.preprocessor_cls is not None:
            # A bare backbone folder: keras-hub would fail looking for a converter.
            with open(files[CONFIG_FILE], encoding="utf-8") as f:
                image_shape = kwargs.get("image_shape", json.load(f)["config"]["image_shape"])
            kwargs.setdefault("preprocessor", _default_preprocessor(cls, image_shape))
        model = keras_hub_from_preset(preset, load_weights=False, **kwargs)
    else:
        files = None
        model = keras_hub_from_preset(preset, load_weights=load_weights, **kwargs)
    if load_weights and files is not None:
        _load_weights(model, files, preset)
    return model._with_categories(**classes) if classes else model


def upload_preset(preset_dir, uri):
    """Uploads a MaX-DeepLab preset folder to the Hugging Face Hub, with this
    package's model card (`README.md`) instead of keras-hub's generic one.

    The card is written into `preset_dir` and uploaded first: keras-hub's
    `upload_preset` replaces a missing card with its own.

    Args:
        preset_dir: a preset folder (`save_to_preset` / `maxdeeplab convert`).
        uri: `hf://org/name` (or `hf://name` for the logged-in user).

    Example:
    >>> upload_preset("presets/max_deeplab_s_coco_641_400k",
    ...               "hf://keras-maxdeeplab/max_deeplab_s_coco_641_400k")
    """
    if not isinstance(uri, str) or not uri.startswith(HF_PREFIX) or uri == HF_PREFIX:
        raise ValueError(
            f"Upload target must be a Hugging Face handle 'hf://org/name'; got {uri!r}."
        )
    if not os.path.isdir(preset_dir):
        raise ValueError(f"Preset folder {preset_dir!r} does not exist.")
    preset_files(preset_dir, load_weights=True, task=True)
    card = write_model_card(preset_dir, handle=uri)
    repo = huggingface_hub.create_repo(repo_id=uri[len(HF_PREFIX) :], exist_ok=True)
    huggingface_hub.upload_file(
        path_or_fileobj=card, path_in_repo="README.md", repo_id=repo.repo_id
    )
    keras_hub.upload_preset(uri, preset_dir)
    return repo.repo_id
