"""What ``tensorflow_model_server`` reads before it serves: the model list (``--model_config_file`` or
``--model_name``/``--model_base_path``), version policies and labels, and its start-up refusals.

Every check and text is TF Serving 2.16.1's (commit 0d726954): ``model_servers/server.cc``
(``BuildAndStart``, ``BuildSingleModelConfig``), ``model_servers/server_core.cc`` (``ValidateModelConfigList``,
``GetPlatform``, ``UpdateModelVersionLabelMap``), ``util/proto_util.h`` (``ParseProtoTextFile``) and
``sources/storage_path/file_system_storage_path_source.cc`` (which versions a policy serves). A refusal is a
:class:`~cmml.serving.errors.ServingError`; ``cmml serve`` prints it as TF Serving's ``main.cc`` does.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import grpc
from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from cmml.serving.errors import ServingError, invalid

TENSORFLOW_PLATFORM = "tensorflow"  # the only platform of the default PlatformConfigMap (model_platform_types.h)
STARTUP_FAILURE = "Failed to start server. Error: "  # main.cc: std::cout << ... << status
STARTUP_EXIT_CODE = 255  # main.cc returns -1


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """``model_version_policy``: ``latest`` (the ``num_versions`` highest, at least 1; the default), ``all``,
    or ``specific`` (the listed versions that exist)."""

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def aspired(self, on_disk: Iterable[int]) -> set[int]:
        """The versions to serve among those on disk (``AspireLatestVersions`` / ``AspireAllVersions`` /
        ``AspireSpecificVersions``)."""
        found = sorted(set(on_disk))
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return set(found) & self.versions
        return set(found[-max(self.num_versions, 1) :]) if found else set()

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {max(self.num_versions, 1)}"
        if self.kind == "specific":
            return "specific " + ",".join(str(v) for v in sorted(self.versions))
        return "all"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model: a name, the folder of its numeric versions, which versions, and version labels."""

    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)


def read_proto_text_file(path: str | os.PathLike, proto: message.Message) -> None:
    """TF Serving's ``ParseProtoTextFile``: an unreadable file is TensorFlow's file-system error
    (``<path>; No such file or directory``), a text that does not parse ``Invalid protobuf file: '<path>'``."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        code = grpc.StatusCode.NOT_FOUND if isinstance(exc, FileNotFoundError) else grpc.StatusCode.FAILED_PRECONDITION
        raise ServingError(code, f"{path}; {os.strerror(exc.errno) if exc.errno else exc}") from None
    except UnicodeDecodeError:
        raise invalid(f"Invalid protobuf file: '{path}'") from None
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError:
        raise invalid(f"Invalid protobuf file: '{path}'") from None


def _is_relative(base_path: str) -> bool:
    """``UriIsRelativePath``: no scheme, no host and not an absolute path."""
    return "://" not in base_path and not base_path.startswith("/")


def _platform(config: model_server_config_pb2.ModelConfig) -> str:
    """``GetPlatform`` (server_core.cc), with the deprecated ``model_type``."""
    if config.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if config.model_platform:
            raise invalid(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {config.name}"
            )
        if config.model_type != model_server_config_pb2.TENSORFLOW:
            raise invalid(f"ModelServerConfig::model_type choice {config.model_type} not supported.")
        return TENSORFLOW_PLATFORM
    if not config.model_platform:
        raise invalid(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {config.name}"
        )
    return config.model_platform


def _policy(config: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        return VersionPolicy("specific", versions=frozenset(int(v) for v in policy.specific.versions))
    return VersionPolicy("latest", num_versions=max(int(policy.latest.num_versions), 1))


def model_configs(
    proto: model_server_config_pb2.ModelServerConfig, allow_version_labels_for_unavailable_models: bool = False
) -> list[ModelConfig]:
    """The models of a ModelServerConfig, refused as ``ServerCore::ReloadConfig`` refuses a first config, in its
    order: a repeated name, a relative base path (``ValidateModelConfigList``), a label (``check_labels``:
    nothing is loaded yet), a platform other than ``tensorflow`` (``CreateStoragePathRoutes``). An empty config
    serves nothing ("Taking no action for empty config."); a ``custom_model_config`` stops TF Serving
    (``LOG(FATAL)``), here an error."""
    which = proto.WhichOneof("config")
    if which is None:
        return []
    if which == "custom_model_config":
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "ModelServer does not yet support custom model config.")
    configs = list(proto.model_config_list.config)
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise invalid(f"Illegal to list model {config.name} multiple times in config list")
        seen.add(config.name)
    for config in configs:
        if _is_relative(config.base_path):
            raise invalid(
                f"Expected model {config.name} to have an absolute path or URI; got base_path()={config.base_path}"
            )
    out = [ModelConfig(c.name, Path(c.base_path), _policy(c), dict(c.version_labels)) for c in configs]
    check_labels(out, {}, allow_version_labels_for_unavailable_models)
    for config in configs:
        platform = _platform(config)
        if platform != TENSORFLOW_PLATFORM:
            raise invalid(f"Model {config.name} requests unsupported platform {platform}")
    return out


def check_labels(configs: Sequence[ModelConfig], available: Mapping[str, set[int]], allow_unavailable: bool) -> None:
    """``UpdateModelVersionLabelMap``: a label may only name a version that is AVAILABLE, unless
    ``--allow_version_labels_for_unavailable_models``. TF Serving checks the labels of a first config before
    it loads anything, so at start-up every label needs that flag."""
    if allow_unavailable:
        return
    for config in configs:
        for _label, version in sorted(config.version_labels.items()):
            if version not in available.get(config.name, set()):
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {config.name}, "
                    "which is not currently available for inference",
                )


def server_config(
    model_name: str, model_base_path: str, model_config_file: str
) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig of a command line (``Server::BuildAndStart``): neither a base path nor a config file
    is an error; ``--model_config_file`` is read as a text-format ModelServerConfig and then ``--model_name`` /
    ``--model_base_path`` are ignored, as the flags' help says (TF Serving does not refuse the combination);
    otherwise ``BuildSingleModelConfig``. Validate the result with :func:`model_configs`."""
    if not model_base_path and not model_config_file:
        raise invalid("Both server_options.model_base_path and server_options.model_config_file are empty!")
    proto = model_server_config_pb2.ModelServerConfig()
    if model_config_file:
        read_proto_text_file(model_config_file, proto)
    else:
        config = proto.model_config_list.config.add(name=model_name, base_path=model_base_path)
        config.model_platform = TENSORFLOW_PLATFORM
    return proto
