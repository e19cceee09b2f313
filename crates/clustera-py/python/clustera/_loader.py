"""Finds the kernel in a file or module: a seed-style ``process_message`` or a
``clustera.Kernel``."""

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, List, Optional

from ._kernel import Kernel


class LoadError(Exception):
    """The file does not define a kernel the runtime can run (the message says what)."""


@dataclass
class Spec:
    """What the native runtime needs to run a kernel."""

    process: Callable[..., Any]
    name: str
    topics: List[str]
    style: str  # "seed" or "kernel"
    producer: bool  # seed style: pass a producer (the seed passes None without OUTPUT_TOPIC)


def load_module(path_or_name: str) -> ModuleType:
    """Imports ``main.py`` (as module ``main``, its folder first on ``sys.path``, so its own
    imports work and ``if __name__ == "__main__"`` stays false) or a dotted module name."""
    if path_or_name.endswith(".py") or os.sep in path_or_name:
        path = os.path.abspath(path_or_name)
        if not os.path.isfile(path):
            raise LoadError(f"{path_or_name}: no such file")
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"{path_or_name}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(path_or_name)


def _seed(module: ModuleType) -> Spec:
    where = getattr(module, "__file__", module.__name__)
    name = getattr(module, "KERNEL_NAME", None)
    if not isinstance(name, str) or not name.strip():
        raise LoadError(f"{where}: KERNEL_NAME must be a non-empty string (found {name!r})")
    # The seed's "Multiple Topics" variant subscribes TOPICS; otherwise DEFAULT_TOPIC.
    topic = getattr(module, "TOPICS", None) or getattr(module, "DEFAULT_TOPIC", None)
    if isinstance(topic, str):
        topics = [t.strip() for t in topic.split(",") if t.strip()]
    elif isinstance(topic, (list, tuple)) and all(isinstance(t, str) for t in topic):
        topics = list(topic)
    elif topic is None and os.environ.get("KAFKA_TOPIC", "").strip():
        topics = []
    else:
        raise LoadError(
            f"{where}: DEFAULT_TOPIC (or TOPICS) must be a topic name or a list of them "
            f"(found {topic!r})"
        )
    process = module.process_message
    if not callable(process):
        raise LoadError(f"{where}: process_message is not a function")
    output = getattr(module, "OUTPUT_TOPIC", None)
    return Spec(process, name.strip(), topics, "seed", bool(output))


def _kernel(obj: Any, where: str) -> Spec:
    if inspect.isclass(obj):
        obj = obj()
    if not isinstance(obj, Kernel):
        raise LoadError(f"{where}: {obj!r} is not a clustera.Kernel")
    name = obj.name or type(obj).__name__
    topics = obj.topics
    if isinstance(topics, str):
        topics = [topics]
    if not all(isinstance(t, str) for t in topics):
        raise LoadError(f"{where}: {type(obj).__name__}.topics must be a list of topic names")
    return Spec(obj.process, name, list(topics), "kernel", False)


def find(target: Any, attribute: Optional[str] = None) -> Spec:
    """A Spec from a module (seed style, or its one ``clustera.Kernel`` subclass), a Kernel
    subclass or instance, or ``module``'s ``attribute``."""
    if isinstance(target, ModuleType):
        where = getattr(target, "__file__", None) or target.__name__
        if attribute:
            if not hasattr(target, attribute):
                raise LoadError(f"{where}: no attribute {attribute!r}")
            return _kernel(getattr(target, attribute), where)
        if hasattr(target, "process_message"):
            return _seed(target)
        kernels = [
            v
            for v in vars(target).values()
            if inspect.isclass(v)
            and issubclass(v, Kernel)
            and v is not Kernel
            and v.__module__ == target.__name__
        ]
        if len(kernels) == 1:
            return _kernel(kernels[0], where)
        if not kernels:
            raise LoadError(
                f"{where}: defines neither process_message(message, producer) nor a "
                "clustera.Kernel subclass"
            )
        names = ", ".join(k.__name__ for k in kernels)
        raise LoadError(f"{where}: several clustera.Kernel subclasses ({names}): name one, FILE:CLASS")
    return _kernel(target, repr(target))


def from_argument(argument: str) -> Spec:
    """``main.py``, ``main.py:MyKernel``, ``package.module`` or ``package.module:MyKernel``."""
    path, _, attribute = argument.partition(":")
    # A Windows drive letter is not an attribute; the runtime targets Linux, but be exact.
    if len(path) == 1 and attribute and attribute.startswith("\\"):
        path, attribute = argument, ""
    return find(load_module(path), attribute or None)
