"""``taskq dash``: a live terminal dashboard (needs ``textual``, in the ``cli`` extra).

The main screen shows every queue with its sizes by state, its processed and
failed rates (per second, measured between refreshes) and the live servers
with the tasks they are running. ``enter`` opens a queue: its tasks by state,
where a task can be cancelled. ``p`` pauses or unpauses the selected queue.
Tables refresh every second in place (cells are updated, rows are never
rebuilt), so nothing flickers. ``q`` or Ctrl-C quits.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskq.cli._common import CliError, broker_url, common_options

if TYPE_CHECKING:
    from taskq.inspector import QueueInfo

__all__ = ["add_parser", "build_app"]

STATES = ("pending", "active", "scheduled", "retry", "archived", "completed", "aggregating")
QUEUE_COLUMNS = ("queue", "state", "size", *STATES, "latency", "processed/s", "failed/s")
SERVER_COLUMNS = ("server", "status", "busy", "queues", "task id", "type", "queue ", "running")
TASK_COLUMNS = ("id", "type", "payload", "detail")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dash`` subcommand."""
    parser = subparsers.add_parser(
        "dash",
        parents=[common_options()],
        help="live terminal dashboard",
        description="A live dashboard. Keys: enter open queue, p pause/unpause, "
        "c cancel task, 1-7 or tab switch state, escape back, q quit.",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="refresh interval (default 1s)",
    )
    parser.set_defaults(func=run_dash)


def run_dash(args: argparse.Namespace) -> int:
    """Check the broker, then run the dashboard until the user quits."""
    import asyncio

    try:
        import textual  # noqa: F401
    except ImportError:
        raise CliError("taskq dash needs the 'textual' package: pip install 'taskq[cli]'") from None
    if not 0.1 <= args.refresh <= 60:
        raise CliError("--refresh must be between 0.1 and 60 seconds", 2)
    asyncio.run(_check_broker(args))
    app = build_app(args)
    app.run()
    return int(app.return_code or 0)


async def _check_broker(args: argparse.Namespace) -> None:
    """Fail with one clear line before the UI starts if the broker is unreachable."""
    from taskq.cli._common import open_broker

    broker = open_broker(args)
    try:
        await broker.ping()
    finally:
        await broker.close()


def _sync_rows(table: Any, rows: Mapping[str, Sequence[str]], columns: Sequence[str]) -> None:
    """Make ``table`` show ``rows`` (key -> cells), touching only what changed."""
    current = {key.value for key in table.rows}
    for key in current - set(rows):
        table.remove_row(key)
    for key, cells in rows.items():
        if key in current:
            old = table.get_row(key)
            for column, old_value, new_value in zip(columns, old, cells, strict=True):
                if str(old_value) != new_value:
                    table.update_cell(key, column, new_value, update_width=True)
        else:
            table.add_row(*cells, key=key)


def build_app(args: argparse.Namespace) -> Any:
    """Build the dashboard application (imports textual)."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import Vertical
    from textual.screen import Screen
    from textual.widgets import DataTable, Footer, Header, Static

    from taskq.brokers.registry import redact_url
    from taskq.cli._output import ago, fmt_duration, short_payload
    from taskq.inspector import AsyncInspector

    refresh_every = float(args.refresh)

    class QueueScreen(Screen[None]):
        """One queue's tasks, one state at a time."""

        BINDINGS = [
            Binding("escape,b", "app.pop_screen", "Back"),
            Binding("tab,right", "next_state", "Next state"),
            Binding("shift+tab,left", "previous_state", "Prev state", show=False),
            Binding("p", "toggle_pause", "Pause/unpause"),
            Binding("c", "cancel_task", "Cancel task"),
            *(
                Binding(str(n), f"show_state({n - 1})", s, show=False)
                for n, s in enumerate(STATES, 1)
            ),
        ]

        def __init__(self, queue: str) -> None:
            super().__init__()
            self.queue = queue
            self.state = "pending"
            self._busy = False

        def compose(self) -> ComposeResult:
            yield Header()
            yield Static(id="queue-summary")
            yield Static(id="state-tabs")
            table: DataTable[str] = DataTable(id="tasks", cursor_type="row", zebra_stripes=True)
            for column in TASK_COLUMNS:
                table.add_column(column, key=column)
            yield table
            yield Footer()

        async def on_mount(self) -> None:
            self.sub_title = f"queue {self.queue}"
            self._show_tabs()
            await self.refresh_data()
            self.set_interval(refresh_every, self.refresh_data)

        def _show_tabs(self) -> None:
            tabs = "  ".join(
                f"[reverse] {n}:{s} [/reverse]" if s == self.state else f" {n}:{s} "
                for n, s in enumerate(STATES, 1)
            )
            self.query_one("#state-tabs", Static).update(tabs)

        async def refresh_data(self) -> None:
            if self._busy:
                return
            self._busy = True
            try:
                insp = self.app.inspector  # type: ignore[attr-defined]
                info = await insp.get_queue_info(self.queue)
                tasks = await insp.list_tasks(self.queue, self.state, page_size=200)
            except Exception as exc:
                self.query_one("#queue-summary", Static).update(f"[red]{exc}[/red]")
                return
            finally:
                self._busy = False
            counts = "  ".join(f"{s} {info.count(s)}" for s in STATES)
            paused = "[b red]PAUSED[/b red]" if info.paused else "[green]running[/green]"
            self.query_one("#queue-summary", Static).update(
                f"Queue [b]{self.queue}[/b]  {paused}  size {info.size}  {counts}"
            )
            rows = {t.id: [t.id, t.type, short_payload(t.payload), _detail(t)] for t in tasks}
            _sync_rows(self.query_one("#tasks", DataTable), rows, TASK_COLUMNS)

        async def action_show_state(self, index: int) -> None:
            self.state = STATES[index]
            self._show_tabs()
            self.query_one("#tasks", DataTable).clear()
            await self.refresh_data()

        async def action_next_state(self) -> None:
            await self.action_show_state((STATES.index(self.state) + 1) % len(STATES))

        async def action_previous_state(self) -> None:
            await self.action_show_state((STATES.index(self.state) - 1) % len(STATES))

        async def action_toggle_pause(self) -> None:
            await self.app.toggle_pause(self.queue)  # type: ignore[attr-defined]
            await self.refresh_data()

        async def action_cancel_task(self) -> None:
            table = self.query_one("#tasks", DataTable)
            if table.row_count == 0:
                self.notify("No task selected", severity="warning")
                return
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            if key is None:
                return
            try:
                state = await self.app.inspector.cancel_processing(key, self.queue)  # type: ignore[attr-defined]
            except Exception as exc:
                self.notify(str(exc), severity="error")
                return
            if state.value == "active":
                self.notify(f"Cancellation sent to task {key}")
            else:
                self.notify(f"Task {key} was {state.value}: archived as canceled")
            await self.refresh_data()

    class DashApp(App[int]):
        """The taskq dashboard."""

        TITLE = "taskq dash"
        CSS = """
        #queues { height: auto; max-height: 60%; }
        #servers { height: 1fr; }
        .section { padding: 1 0 0 1; text-style: bold; }
        #status { padding: 0 1; color: $text-muted; }
        #state-tabs { padding: 0 1; }
        #queue-summary { padding: 1 1 0 1; }
        """
        BINDINGS = [
            Binding("q", "quit", "Quit"),
            Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
            Binding("p", "toggle_selected_pause", "Pause/unpause"),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.url = broker_url(args)
            self.inspector: AsyncInspector | None = None
            self._last: dict[str, tuple[float, int, int]] = {}
            self._busy = False

        def compose(self) -> ComposeResult:
            yield Header()
            with Vertical():
                yield Static("Queues (enter: open, p: pause/unpause)", classes="section")
                queues: DataTable[str] = DataTable(id="queues", cursor_type="row")
                for column in QUEUE_COLUMNS:
                    queues.add_column(column, key=column)
                yield queues
                yield Static("Servers and their active tasks", classes="section")
                servers: DataTable[str] = DataTable(id="servers", cursor_type="row")
                for column in SERVER_COLUMNS:
                    servers.add_column(column.strip(), key=column)
                yield servers
                yield Static(id="status")
            yield Footer()

        async def on_mount(self) -> None:
            from taskq.cli._common import open_broker

            self.sub_title = redact_url(self.url)
            self.inspector = AsyncInspector(open_broker(args))
            await self.refresh_data()
            self.set_interval(refresh_every, self.refresh_data)
            self.query_one("#queues", DataTable).focus()

        async def on_unmount(self) -> None:
            if self.inspector is not None:
                await self.inspector.broker.close()

        async def refresh_data(self) -> None:
            if self._busy or self.inspector is None:
                return
            self._busy = True
            try:
                infos = []
                for name in await self.inspector.queues():
                    try:
                        infos.append(await self.inspector.get_queue_info(name))
                    except Exception:  # removed between the two calls
                        continue
                servers = await self.inspector.servers()
            except Exception as exc:
                self.query_one("#status", Static).update(f"[red]broker error: {exc}[/red]")
                return
            finally:
                self._busy = False
            now = time.monotonic()
            rows = {info.queue: self._queue_row(info, now) for info in infos}
            _sync_rows(self.query_one("#queues", DataTable), rows, QUEUE_COLUMNS)
            server_rows: dict[str, list[str]] = {}
            for s in servers:
                name = f"{s.host}:{s.pid}"
                queues = ",".join(sorted(s.queues))
                head = [name, s.status, f"{len(s.active_workers)}/{s.concurrency}", queues]
                if not s.active_workers:
                    server_rows[s.id] = [*head, "-", "-", "-", "-"]
                for n, w in enumerate(s.active_workers):
                    started = ago(w.started_at).replace(" ago", "")
                    if w.cut_off:
                        started += f" (cut off: {w.cut_off})"
                    cells = [w.task_id, w.task_type, w.queue, started]
                    server_rows[f"{s.id}/{n}"] = [*(head if n == 0 else [""] * 4), *cells]
            _sync_rows(self.query_one("#servers", DataTable), server_rows, SERVER_COLUMNS)
            clock = time.strftime("%H:%M:%S")
            self.query_one("#status", Static).update(
                f"{len(infos)} queues, {len(servers)} servers - updated {clock}"
            )

        def _queue_row(self, info: QueueInfo, now: float) -> list[str]:
            previous = self._last.get(info.queue)
            self._last[info.queue] = (now, info.processed_total, info.failed_total)
            processed_rate = failed_rate = "-"
            if previous is not None and now > previous[0]:
                elapsed = now - previous[0]
                processed_rate = f"{max(0, info.processed_total - previous[1]) / elapsed:.1f}"
                failed_rate = f"{max(0, info.failed_total - previous[2]) / elapsed:.1f}"
            return [
                info.queue,
                "PAUSED" if info.paused else "run",
                str(info.size),
                *(str(info.count(s)) for s in STATES),
                fmt_duration(info.latency),
                processed_rate,
                failed_rate,
            ]

        def _selected_queue(self) -> str | None:
            table = self.query_one("#queues", DataTable)
            if table.row_count == 0:
                return None
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            return None if key is None else str(key)

        async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
            if event.data_table.id == "queues" and event.row_key.value is not None:
                await self.push_screen(QueueScreen(str(event.row_key.value)))

        async def action_toggle_selected_pause(self) -> None:
            queue = self._selected_queue()
            if queue is not None:
                await self.toggle_pause(queue)
                await self.refresh_data()

        async def toggle_pause(self, queue: str) -> None:
            assert self.inspector is not None
            try:
                if (await self.inspector.get_queue_info(queue)).paused:
                    await self.inspector.unpause_queue(queue)
                    self.notify(f"Unpaused queue {queue}")
                else:
                    await self.inspector.pause_queue(queue)
                    self.notify(f"Paused queue {queue}")
            except Exception as exc:
                self.notify(str(exc), severity="error")

    def _detail(task: Any) -> str:
        if task.state.value == "active":
            return "orphaned (lease expired)" if task.is_orphaned else "running"
        if task.state.value in {"scheduled", "retry"}:
            extra = f", {task.last_error[:40]}" if task.last_error else ""
            return f"due {ago(task.next_process_at)}{extra}"
        if task.state.value == "archived":
            return task.last_error[:60] or "-"
        if task.state.value == "aggregating":
            return f"group {task.group}"
        if task.state.value == "completed":
            return f"completed {ago(task.completed_at)}"
        return f"enqueued {ago(task.enqueued_at)}"

    return DashApp()
