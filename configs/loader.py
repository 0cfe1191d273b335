"""Read and validate the YAML config before Ray starts anything.

Every error names the file, the entry (index and model_id) and the field, and all errors of a
file are reported together so a user fixes them in one pass.
"""

from __future__ import annotations

import difflib
import inspect
import os
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from common import constants
from configs.pool_checks import check_pools
from configs.env_overrides import ENV_OVERRIDES, apply_env_overrides, field_label
from configs.server_models import AppArgs, LoadedConfig, MultiModelConfig, RouterConfig
from servers.registry import get_engine_class, import_engine_modules, known_engine_types

BUILDER_IMPORT_PATH = "vllm_host:build_app"


class ConfigError(ValueError):
    """A config problem a user must fix; the message lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid model config {source}:\n{lines}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [f"file not found (cwd: {Path.cwd()})"])
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from None
    if not isinstance(doc, dict):
        raise ConfigError(str(path), ["top level must be a mapping with 'applications' or 'llm_configs'"])
    return doc


def app_args_from_document(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept a Ray Serve config (``applications: [...]``) or a bare ``{llm_configs: [...]}``."""
    if "applications" not in doc:
        return doc
    apps = doc["applications"]
    if not isinstance(apps, list) or not apps:
        raise ConfigError(source, ["'applications' must be a non-empty list"])
    ours = [a for a in apps if isinstance(a, dict) and a.get("import_path") == BUILDER_IMPORT_PATH]
    if len(ours) != 1:
        raise ConfigError(source, [f"expected exactly one application with import_path '{BUILDER_IMPORT_PATH}', found {len(ours)}"])
    args = ours[0].get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(source, ["applications[].args must be a mapping"])
    return args


def load_app_config(args: dict[str, Any] | AppArgs, default_path: str) -> LoadedConfig:
    """Resolve ``build_app``'s args to a validated config: inline ``llm_configs`` or a YAML file."""
    app_args = _parse(AppArgs, args, "build_app args", "args") if isinstance(args, dict) else args
    if app_args.llm_configs is not None:
        return validate_app_args(app_args, source="application args", base_dir=None)
    path = Path(app_args.config_path or default_path)
    doc = read_yaml(path)
    file_args = _parse(AppArgs, app_args_from_document(doc, str(path)), str(path), "args")
    if file_args.llm_configs is None:
        raise ConfigError(str(path), ["no 'llm_configs' list found"])
    # settings given beside config_path (a Serve config's args:) refine the file's instead of vanishing
    merged = file_args.model_copy(update={
        "engine_modules": [*file_args.engine_modules, *app_args.engine_modules],
        "router_config": {**file_args.router_config, **app_args.router_config},
        "pools": {**file_args.pools, **app_args.pools},
    })
    return validate_app_args(merged, source=str(path), base_dir=path.resolve().parent)


def validate_app_args(args: AppArgs, source: str, base_dir: Path | None) -> LoadedConfig:
    problems: list[str] = []
    try:
        import_engine_modules(args.engine_modules)
    except ImportError as exc:
        raise ConfigError(source, [f"engine_modules: cannot import: {exc}"]) from None
    router = _parse_router_config(args.router_config, source)
    entries = [_validate_entry(i, raw, problems) for i, raw in enumerate(args.llm_configs or [])]
    models = [e for e in entries if e is not None]
    if not args.llm_configs:
        problems.append("llm_configs: must list at least one model")
    problems += _check_duplicates(models)
    problems += _check_shared_deployments(models)
    if problems:
        raise ConfigError(source, problems)
    if base_dir is not None:
        models = [_resolve_relative_source(m, base_dir) for m in models]
    problems += check_pools(models, args.pools)
    if problems:
        raise ConfigError(source, problems)
    return LoadedConfig(models=models, router=router, engine_modules=args.engine_modules, pools=args.pools, source=source)


def _parse_router_config(raw: dict[str, Any], source: str) -> RouterConfig:
    """``router_config`` with the environment's overrides; a bad override names its variable."""
    try:
        return RouterConfig.model_validate(apply_env_overrides(raw))
    except ValidationError as exc:
        problems = format_validation_error(exc, RouterConfig, prefix="router_config")
        by_field = {field_label(path): name for name, path in ENV_OVERRIDES.items() if name in os.environ}
        raise ConfigError(source, [_name_variable(p, by_field) for p in problems]) from None


def _name_variable(problem: str, by_field: dict[str, str]) -> str:
    field = problem.split(":", 1)[0]
    return f"{problem} (from the environment variable {by_field[field]})" if field in by_field else problem


def _validate_entry(index: int, raw: Any, problems: list[str]) -> MultiModelConfig | None:
    label = f"llm_configs[{index}]"
    loading = raw.get("model_loading_config") if isinstance(raw, dict) else None
    if isinstance(loading, dict) and loading.get("model_id"):
        label += f" (model_id '{loading['model_id']}')"
    try:
        entry = MultiModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems += [f"{label}: {msg}" for msg in format_validation_error(exc, MultiModelConfig)]
        return None
    before = len(problems)
    problems += [f"{label}: {msg}" for msg in _check_engine(entry)]
    problems += [f"{label}: {msg}" for msg in check_deployment_options(entry.deployment_config)]
    problems += [f"{label}: {msg}" for msg in _check_placement(entry)]
    problems += [f"{label}: {msg}" for msg in _check_adapters(entry)]
    return entry if len(problems) == before else None


def _check_engine(entry: MultiModelConfig) -> list[str]:
    try:
        engine_cls = get_engine_class(entry.engine_type)
    except KeyError:
        close = difflib.get_close_matches(entry.engine_type, known_engine_types(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [f"model_loading_config.type: unknown engine type {entry.engine_type!r}{hint}; known: {', '.join(known_engine_types())}"]
    except ImportError as exc:
        return [f"model_loading_config.type: engine {entry.engine_type!r} is not usable here: {exc}"]
    try:
        engine_cls.config_model.model_validate(entry.engine_kwargs)
    except ValidationError as exc:
        return format_validation_error(exc, engine_cls.config_model, prefix="engine_kwargs")
    return []


def _check_placement(entry: MultiModelConfig) -> list[str]:
    """``in_router`` models take their replicas and resources from ``router_config``; and no
    deployment may take the router's name."""
    if entry.in_router and entry.deployment_config:
        return ["deployment_config: not used with in_router: true (the engine runs in the router's replicas; "
                "size them with router_config.num_cpus / num_replicas)"]
    if not entry.in_router and entry.deployment_name() == constants.ROUTER_DEPLOYMENT_NAME:
        return [f"deployment_config.name: '{constants.ROUTER_DEPLOYMENT_NAME}' is the router's deployment; "
                "use in_router: true to host a model there"]
    return []


def _check_adapters(entry: MultiModelConfig) -> list[str]:
    """LoRA adapters need an engine that loads them (one implementing ``load_adapter``)."""
    if entry.lora_adapters and not callable(getattr(get_engine_class(entry.engine_type), "load_adapter", None)):
        return [f"lora_adapters: engine {entry.engine_type} does not load LoRA adapters"]
    if entry.load == "on_demand" and entry.in_router:
        return ["load: on_demand is for model deployments; in_router models load with the router"]
    return []


def check_deployment_options(options: dict[str, Any]) -> list[str]:
    """Validate with Ray Serve's own ``serve.deployment`` rather than re-listing its keys."""
    from ray import serve  # imported here: the config models stay importable without Ray

    class _Probe:
        pass

    try:
        serve.deployment(_Probe, **options)
    except TypeError as exc:
        bad = str(exc).rsplit("'", 2)[-2] if "'" in str(exc) else ""
        valid = [p for p in inspect.signature(serve.deployment).parameters if not p.startswith("_")]
        close = difflib.get_close_matches(bad, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [f"deployment_config.{bad}: not a Ray Serve deployment option{hint}"]
    except ValidationError as exc:
        return format_validation_error(exc, prefix="deployment_config")
    except (ValueError, AssertionError) as exc:
        return [f"deployment_config: {exc}"]
    return []


def _check_duplicates(models: Iterable[MultiModelConfig]) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for m in models:
        seen[m.model_id] = seen.get(m.model_id, 0) + 1
    for model_id, count in seen.items():
        if count > 1:
            problems.append(f"model_loading_config.model_id: '{model_id}' is used by {count} entries; ids must be unique")
    return problems


def _check_shared_deployments(models: Iterable[MultiModelConfig]) -> list[str]:
    """Entries that share a deployment name must not disagree about its options."""
    first: dict[str, MultiModelConfig] = {}  # per deployment, the first entry that sets its options
    problems = []
    for m in models:
        name = m.deployment_name()
        options = {k: v for k, v in m.deployment_config.items() if k != "name"}
        if not options:
            continue
        if name not in first:
            first[name] = m
            continue
        owner = {k: v for k, v in first[name].deployment_config.items() if k != "name"}
        if options != owner:
            problems.append(
                f"deployment_config: model '{m.model_id}' shares deployment '{name}' with "
                f"'{first[name].model_id}' but sets different options; set them on one entry only"
            )
    return problems


def _resolve_relative_source(entry: MultiModelConfig, base_dir: Path) -> MultiModelConfig:
    """A relative ``model_source`` that exists next to the YAML file is made absolute."""
    source = entry.model_loading_config.model_source
    candidate = base_dir / source
    if source.startswith(("/", "file://")) or "://" in source or not candidate.exists():
        return entry
    loading = entry.model_loading_config.model_copy(update={"model_source": str(candidate.resolve())})
    return entry.model_copy(update={"model_loading_config": loading})


def format_validation_error(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """``prefix.field.path: message`` per error, with a did-you-mean for unknown keys."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
            options = _fields_at(model, err["loc"][:-1]) if model else []
            close = difflib.get_close_matches(str(err["loc"][-1]), options, n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) pydantic model that ``loc`` points into."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _parse(model: type[BaseModel], data: Any, source: str, label: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_validation_error(exc, model, prefix=label)) from None
