"""Run the real CNI plugins of a planned delegate chain exactly as the CNI spec says a runtime does.

Plugins are found only by bare name in the configured CNI_PATH dirs, run without a shell in a
clean environment and their own process group, bounded in time (the whole group is killed on
expiry or cancellation) and in output, and a global limiter caps how many run at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc

from genie.cni import errors
from genie.domain import events as ev

log = logging.getLogger("genie.services.delegates")

MAX_STDOUT: Final = 1 << 20
STDERR_TAIL: Final = 64 * 1024
SAFE_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A plugin must not outlive the agent: an orphan still inside its ADD would allocate after
# recovery already rolled that ADD back (a leaked address). util-linux's setpriv sets
# PR_SET_PDEATHSIG and execs the plugin, so the kernel SIGKILLs it if the agent dies. The
# tie is to the thread that spawns: the event loop's, which lives as long as the agent.
_SETPRIV: Final = next(
    (p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.access(p, os.X_OK)), None
)
_DEATH_TIE: Final = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()
_PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# CHECK exists from spec 0.4.0 on; libcni refuses it for older configs, genie skips it.
_NO_CHECK_VERSIONS: Final = frozenset({"", "0.1.0", "0.2.0", "0.3.0", "0.3.1"})


# Told (network name, CNI command) each time a delegate chain's ADD, DEL or CHECK fails.
FailureHook = Callable[[str, str], None]


class DelegateRunner:
    """Executes delegate chains (ADD in order, DEL in reverse, CHECK in order)."""

    def __init__(
        self,
        *,
        cni_path: Sequence[Path],
        timeout: float = 60.0,
        max_concurrency: int = 64,
        self_type: str = "genie",
        on_failure: FailureHook | None = None,
    ) -> None:
        self._cni_path = tuple(cni_path)
        self._timeout = timeout
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._self_type = self_type
        self._on_failure = on_failure
        if not _DEATH_TIE:
            log.warning("setpriv (util-linux) not found: delegates may outlive a crashed agent")

    @property
    def cni_path(self) -> tuple[Path, ...]:
        return self._cni_path

    async def add(
        self,
        plan: ev.PlannedDelegate,
        *,
        container_id: str,
        netns: str,
        runtime_args: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        """Run the chain's ADD in order; each plugin gets the previous one's result."""
        with self._counting_failure(plan, "ADD"):
            return await self._add(
                plan, container_id=container_id, netns=netns, runtime_args=runtime_args
            )

    async def _add(
        self,
        plan: ev.PlannedDelegate,
        *,
        container_id: str,
        netns: str,
        runtime_args: Sequence[tuple[str, str]],
    ) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        for plugin in plan.plugins:
            out = await self._exec(
                "ADD",
                plan,
                plugin,
                prev_result=result,
                container_id=container_id,
                netns=netns,
                runtime_args=runtime_args,
            )
            if not isinstance(out, dict) or "cniVersion" not in out:
                raise errors.CniError(
                    errors.DELEGATE_FAILED,
                    f"delegate {plugin.get('type')} for network {plan.network} printed no result",
                )
            result = out
        if result is None:
            raise errors.CniError(
                errors.INVALID_NETWORK_CONFIG, f"network {plan.network} has no plugins"
            )
        return result

    async def delete(
        self,
        plan: ev.PlannedDelegate,
        *,
        prev_result: Mapping[str, Any] | None,
        container_id: str,
        netns: str,
        runtime_args: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Run the chain's DEL in reverse; every plugin gets the stored final result."""
        await self._each(
            "DEL",
            plan,
            reversed(plan.plugins),
            prev_result=prev_result,
            container_id=container_id,
            netns=netns,
            runtime_args=runtime_args,
        )

    async def check(
        self,
        plan: ev.PlannedDelegate,
        *,
        prev_result: Mapping[str, Any],
        container_id: str,
        netns: str,
        runtime_args: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Run the chain's CHECK in order with the stored final result (skipped before 0.4.0)."""
        if plan.cni_version in _NO_CHECK_VERSIONS:
            return
        await self._each(
            "CHECK",
            plan,
            plan.plugins,
            prev_result=prev_result,
            container_id=container_id,
            netns=netns,
            runtime_args=runtime_args,
        )

    async def _each(
        self,
        command: str,
        plan: ev.PlannedDelegate,
        plugins: Iterable[Mapping[str, Any]],
        *,
        prev_result: Mapping[str, Any] | None,
        container_id: str,
        netns: str,
        runtime_args: Sequence[tuple[str, str]],
    ) -> None:
        """`command` for each of `plugins` in turn, all given the same stored result."""
        with self._counting_failure(plan, command):
            for plugin in plugins:
                await self._exec(
                    command,
                    plan,
                    plugin,
                    prev_result=prev_result,
                    container_id=container_id,
                    netns=netns,
                    runtime_args=runtime_args,
                )

    @contextlib.contextmanager
    def _counting_failure(self, plan: ev.PlannedDelegate, command: str) -> Iterator[None]:
        """Report a chain that fails with a CNI error (not one cancelled) to `on_failure`."""
        try:
            yield
        except errors.CniError:
            if self._on_failure is not None:
                self._on_failure(plan.network, command)
            raise

    # --- one plugin exec ------------------------------------------------------------------

    def resolve(self, plugin_type: object, *, network: str) -> Path:
        """The executable for a plugin `type`: a bare name inside CNI_PATH, nothing else."""
        dirs = ":".join(str(d) for d in self._cni_path)
        if (
            not isinstance(plugin_type, str)
            or _PLUGIN_NAME.fullmatch(plugin_type) is None
            or plugin_type in {".", ".."}
        ):
            raise errors.CniError(
                errors.INVALID_NETWORK_CONFIG,
                f"network {network}: plugin type {plugin_type!r} is not a plain plugin name",
            )
        if plugin_type == self._self_type:
            raise errors.CniError(
                errors.INVALID_NETWORK_CONFIG,
                f"network {network}: plugin type {plugin_type!r} is genie itself",
            )
        for directory in self._cni_path:
            candidate = directory / plugin_type
            try:
                st = candidate.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
                return candidate
        raise errors.CniError(
            errors.INVALID_NETWORK_CONFIG,
            f"network {network}: plugin type {plugin_type!r} not found in {dirs}",
        )

    def environment(
        self,
        command: str,
        plan: ev.PlannedDelegate,
        *,
        container_id: str,
        netns: str,
        runtime_args: Sequence[tuple[str, str]],
    ) -> dict[str, str]:
        """The plugin's whole environment: the CNI variables and a fixed PATH, nothing inherited."""
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": plan.ifname,
            "CNI_ARGS": merge_cni_args(runtime_args, plan.cni_args, network=plan.network),
            "CNI_PATH": os.pathsep.join(str(d) for d in self._cni_path),
            "PATH": SAFE_PATH,
        }

    async def _exec(
        self,
        command: str,
        plan: ev.PlannedDelegate,
        plugin: Mapping[str, Any],
        *,
        prev_result: Mapping[str, Any] | None,
        container_id: str,
        netns: str,
        runtime_args: Sequence[tuple[str, str]],
    ) -> Any:
        plugin_type = plugin.get("type")
        executable = self.resolve(plugin_type, network=plan.network)
        conf = dict(plugin)
        if prev_result is not None:
            conf["prevResult"] = prev_result
        else:
            conf.pop("prevResult", None)
        stdin = json.dumps(conf).encode()
        env = self.environment(
            command, plan, container_id=container_id, netns=netns, runtime_args=runtime_args
        )
        what = f"delegate {plugin_type} for network {plan.network}"
        async with self._limiter:
            status, stdout, stderr = await _run(
                executable, stdin=stdin, env=env, limit_s=self._timeout, what=what
            )
        if status != 0:
            log.warning(
                "%s %s (interface %s, container %s) exited with status %s; stderr: %s",
                what,
                command,
                plan.ifname,
                container_id,
                status,
                stderr.decode(errors="replace").strip() or "(empty)",
            )
            raise _failure(what, plan.network, status=status, stdout=stdout, stderr=stderr)
        if command != "ADD":
            return None
        try:
            return json.loads(stdout)
        except (ValueError, RecursionError):
            return None


def merge_cni_args(
    runtime_args: Sequence[tuple[str, str]],
    plan_args: Sequence[tuple[str, str]],
    *,
    network: str,
) -> str:
    """CNI_ARGS text: the runtime's pairs, then the plan's (which win), IgnoreUnknown first."""
    merged: dict[str, str] = {}
    for key, value in (*runtime_args, *plan_args):
        if not key or any(c in key for c in "=;") or any(c in value for c in "=;"):
            raise errors.CniError(
                errors.INVALID_NETWORK_CONFIG,
                f"network {network}: CNI_ARGS pair {key!r}={value!r} cannot be encoded",
            )
        merged.pop(key, None)
        merged[key] = value
    if not merged:
        return ""
    merged.pop("IgnoreUnknown", None)
    return ";".join(f"{k}={v}" for k, v in (("IgnoreUnknown", "true"), *merged.items()))


def _failure(
    what: str, network: str, *, status: int, stdout: bytes, stderr: bytes
) -> errors.CniError:
    """The plugin's own CNI error when it printed one, else a DELEGATE_FAILED with its stderr."""
    try:
        doc = json.loads(stdout)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        code, msg = doc.get("code"), doc.get("msg")
        if isinstance(code, int) and not isinstance(code, bool) and isinstance(msg, str):
            details = doc.get("details", "")
            return errors.CniError(
                code, f"{network}: {msg}", details if isinstance(details, str) else str(details)
            )
    tail = stderr.decode(errors="replace").strip()[-4096:]
    why = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    return errors.CniError(
        errors.DELEGATE_FAILED, f"{what} {why}" + (f": {tail}" if tail else ""), tail
    )


async def _run(
    executable: Path, *, stdin: bytes, env: Mapping[str, str], limit_s: float, what: str
) -> tuple[int, bytes, bytes]:
    """Exec with `stdin`, collect capped stdout and the stderr tail; kill the group on any exit."""
    process = await anyio.open_process(
        [*_DEATH_TIE, str(executable)],
        stdin=-1,
        stdout=-1,
        stderr=-1,
        env=dict(env),
        start_new_session=True,
        cwd="/",
    )
    stdout = bytearray()
    stderr = bytearray()
    overflow = False
    try:
        with anyio.move_on_after(limit_s) as scope:
            async with anyio.create_task_group() as tg:

                async def feed() -> None:
                    assert process.stdin is not None
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await process.stdin.send(stdin)
                    await process.stdin.aclose()

                async def read_stdout() -> None:
                    nonlocal overflow
                    assert process.stdout is not None
                    async for chunk in process.stdout:
                        stdout.extend(chunk)
                        if len(stdout) > MAX_STDOUT:
                            overflow = True
                            _kill_group(process)
                            return

                async def read_stderr() -> None:
                    assert process.stderr is not None
                    async for chunk in process.stderr:
                        stderr.extend(chunk)
                        if len(stderr) > 2 * STDERR_TAIL:
                            del stderr[:-STDERR_TAIL]

                tg.start_soon(feed)
                tg.start_soon(read_stdout)
                tg.start_soon(read_stderr)
            await process.wait()
    finally:
        if process.returncode is None:
            _kill_group(process)
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()
    if scope.cancelled_caught:
        tail = stderr[-STDERR_TAIL:].decode(errors="replace").strip()
        log.warning("%s timed out after %gs; stderr: %s", what, limit_s, tail or "(empty)")
        raise errors.CniError(errors.DELEGATE_FAILED, f"{what} timed out after {limit_s:g}s")
    if overflow:
        raise errors.CniError(
            errors.DELEGATE_FAILED, f"{what} printed more than {MAX_STDOUT} bytes"
        )
    status = process.returncode
    assert status is not None
    return status, bytes(stdout), bytes(stderr[-STDERR_TAIL:])


def _kill_group(process: anyio.abc.Process) -> None:
    """SIGKILL the plugin and everything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
