"""What our lifecycle nodes share: table-driven parameters, the transitions' error handling,
self-start without a manager, and the console entry.

A `TableNode` declares its rows of a `ParameterTable` (parameters.py) and checks every
start-up override against them: a wrongly typed, out-of-range or unknown one is kept as a
problem, and configure then fails with one line naming each (key, value, what was expected).
rclpy itself would raise from the constructor for a wrong type (a traceback) and ignore an
unknown key. Live `set_parameters` (`ros2 param set`) of a parameter read at configure is
refused with the reason while the node is configured.

Subclasses implement `configure` (raise ConfigureError with the fix), `activate`,
`deactivate` and `release` (undo configure); each may be called when there is nothing to undo.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from .parameters import ARRAY_TYPES, CONFIGURE, START, Param, given_values, suggest

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class ConfigureError(RuntimeError):
    """A setting that stops the node from configuring; the message says what to fix."""


class TableNode(LifecycleNode):
    """A lifecycle node whose parameters come from tables (see the module doc)."""

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        self.last_error = ""  # the configure failure, for callers without a log reader
        self.parameter_problems: list[str] = []  # overrides that were not applied
        self.specs: dict[str, Param] = {}  # every declared row, by full name
        self._cli_args = kwargs.get("cli_args")
        super().__init__(node_name, **kwargs)

    # -- declaring ---------------------------------------------------------------------------

    def declare_rows(self, rows: list[Param], **context: Any) -> dict[str, Any]:
        """Declare each row (its override applied where it fits); {name: value}. A computed
        default sees `context` and the rows declared before it, by their last name part."""
        values: dict[str, Any] = {}
        short: dict[str, Any] = dict(context)
        for row in rows:
            if callable(row.default):
                row = replace(row, default=row.default(short))
            values[row.name] = short[row.name.rsplit(".", 1)[-1]] = self._declare_row(row)
        return values

    def _declare_row(self, row: Param) -> Any:
        self.specs[row.name] = row
        override = self.overrides().get(row.name)
        problem = None if override is None else row.problem(override.value, override.type_)
        if problem is not None:
            self.parameter_problems.append(problem)
        empty_list = override is not None and row.is_empty_list(override.value, override.type_)
        if row.type in ARRAY_TYPES and (row.default == [] or empty_list):
            if problem is None and override is not None and not empty_list:
                value = override.value
            else:
                value = row.default
            # declared by type, then set: rclpy cannot declare an empty list's type otherwise
            self.declare_parameter(row.name, row.type, row.descriptor(), ignore_override=True)
            self.set_parameters([Parameter(row.name, row.type, list(value))])
            return list(value)
        try:
            return self.declare_parameter(
                row.name, row.default, row.descriptor(), ignore_override=problem is not None
            ).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            # a check rclpy makes that ours did not (the row's problem() should catch it)
            self.parameter_problems.append(f"{row.name}: {err}")
            return self.declare_parameter(
                row.name, row.default, row.descriptor(), ignore_override=True
            ).value

    def finish_declaring(self) -> None:
        """After the last row: what rcl dropped from this node's own arguments is a problem,
        and live changes go through the table's checks from now on."""
        self.check_given(self._cli_args)
        self.add_pre_set_parameters_callback(self._typed_empty_lists)
        self.add_on_set_parameters_callback(self._check_set)
        self.add_post_set_parameters_callback(self.parameters_changed)

    def overrides(self) -> dict[str, Parameter]:
        """Start-up values for this node: params files, `-p`, constructor overrides.

        rclpy has no public getter for them (rclcpp has get_parameter_overrides()); Node keeps
        them in `_parameter_overrides` since Dashing, and this is the one place that reads it.
        """
        return self._parameter_overrides

    def check_given(self, argv: list[str] | None) -> None:
        """Values that `argv` gives this node but rcl dropped (see parameters.given_values)
        become problems, like any override that does not fit its row."""
        if not argv:
            return
        fqn = self.get_fully_qualified_name()
        overrides = self.overrides()
        for name, value in given_values(list(argv), fqn).items():
            row, override = self.specs.get(name), overrides.get(name)
            if row is None or value is None or (override is not None and override.value == value):
                continue
            problem = row.problem(value)
            if problem is not None and problem not in self.parameter_problems:
                self.parameter_problems.append(problem)

    def unknown_overrides(self) -> dict[str, Any]:
        """Overrides that match no declared parameter: typos, or keys of another node."""
        declared = set(self._parameters)
        return {n: p.value for n, p in self.overrides().items() if n not in declared}

    def unknown_problems(self, ignore: Callable[[str], bool] = lambda name: False) -> list[str]:
        known = sorted(self.specs)
        unknown = [(n, v) for n, v in self.unknown_overrides().items() if not ignore(n)]
        out = [f"{n} {v!r}: no such parameter{suggest(n, known)}" for n, v in unknown[:5]]
        if len(unknown) > 5:  # a params file meant for another node: the first few say so
            out.append(f"{len(unknown) - 5} more unknown keys")
        return out

    def p(self, name: str) -> Any:
        return self.get_parameter(name).value

    # -- live changes ------------------------------------------------------------------------

    def _typed_empty_lists(self, params: list[Parameter]) -> list[Parameter]:
        """`ros2 param set n x "[]"` sends a bool list: an empty list takes the row's type."""
        out = []
        for param in params:
            row = self.specs.get(param.name)
            if row is not None and row.is_empty_list(param.value, param.type_):
                param = Parameter(param.name, row.type, [])
            out.append(param)
        return out

    def _check_set(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            row = self.specs.get(param.name)
            if row is None:
                continue
            if row.when == CONFIGURE and self.state != "unconfigured":
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} is read at configure and the node is {self.state}: "
                    "deactivate and clean up the node, set it, then configure again",
                )
            if row.when == START:
                return SetParametersResult(
                    successful=False, reason=f"{param.name} is read when the node starts"
                )
            problem = row.problem(param.value, param.type_) or self.check_live(param)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def check_live(self, param: Parameter) -> str | None:
        """A subclass's own check of a value set while running (e.g. against the model)."""
        return None

    def parameters_changed(self, params: list[Parameter]) -> None:
        """Called after a successful set; a subclass applies what cannot wait for a frame."""

    # -- transitions -------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state_machine.current_state[1]

    def configure(self) -> None:
        raise NotImplementedError

    def activate(self) -> None:
        """Start serving (the default: nothing to start)."""

    def deactivate(self) -> None:
        """Stop serving; safe when not serving."""

    def release(self) -> None:
        """Undo configure; safe when not configured."""

    def check_parameters(self) -> None:
        """ConfigureError naming every override that was not applied, in one line."""
        problems = self.parameter_problems + self.unknown_problems()
        if problems:
            raise ConfigureError("parameters: " + "; ".join(problems))

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.last_error = ""
        try:
            self.check_parameters()
            self.configure()
        except Exception as err:  # rclpy would swallow it silently
            plain = isinstance(err, ConfigureError)
            self.last_error = str(err) if plain else f"{type(err).__name__}: {err}"
            self.get_logger().error(f"configure failed: {self.last_error}")
            self.release()
            return FAILURE
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.activate()
        except Exception as err:
            self.get_logger().error(f"activate failed: {type(err).__name__}: {err}")
            self.deactivate()
            return FAILURE
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        self.release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        self.release()
        return SUCCESS  # back to unconfigured: a manager may configure again


def start(node: LifecycleNode) -> bool:
    """Configure and activate, as a lifecycle manager would; False if either fails."""
    if node.trigger_configure() != SUCCESS:
        return False
    return node.trigger_activate() == SUCCESS


def run_node(make_node: Callable[[], Any], args: list[str] | None = None) -> int:
    """Build the node, start it when its `autostart` parameter says so, spin until shut down.

    Exit code 1 when configure/activate fails (the node has logged the one clear message);
    2 for a missing or malformed params file or a value rclpy refuses (one line on stderr).
    SIGINT/SIGTERM stop the executor, then the node (its worker first), then the context.
    """
    from . import entry

    try:
        entry.init(args)
    except entry.EntryError as err:
        return entry.report(err)
    node = None
    code = 0
    try:
        node = make_node()
        if isinstance(node, TableNode):  # what rcl dropped from the process's arguments
            node.check_given(sys.argv if args is None else args)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.get_parameter("autostart").value and not start(node):
            code = 1
        else:
            entry.spin_until_interrupted(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except entry.NODE_ERRORS as err:  # raised while building the node: not a traceback
        code = entry.report(err)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
