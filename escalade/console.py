"""Progress bars and tables on the terminal (rich), kept apart from the work they report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from escalade.attest import VerdictReport
from escalade.demo import DemoReport, Percentiles

if TYPE_CHECKING:
    # The benchmark needs the `models` extra; the console must not.
    from escalade.poisoning_bench import PoisoningReport
    from escalade.poisoning_bench.report import AttackResult

console = Console(stderr=True)


class StepCallback(Protocol):
    def __call__(self, description: str, done: int, total: int) -> None: ...


@contextmanager
def progress_bar() -> Iterator[StepCallback]:
    """A callback that drives one bar per step description."""
    with Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def step(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=max(total, 1))
            progress.update(tasks[description], completed=done, total=max(total, 1))

        yield step


def _ms(p: Percentiles) -> str:
    if p.p50 is None or p.p95 is None:
        return "-"
    return f"{p.p50:.2f} / {p.p95:.2f}"


def print_demo_report(report: DemoReport) -> None:
    out = Console()
    table = Table(
        title=f"Escalade demo: {report.model_id} v{report.model_version}", show_lines=False
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("inputs (test split)", str(report.inputs))
    table.add_row("answered locally", f"{report.answered_locally}")
    table.add_row("escalated to the hub", f"{report.escalated} ({report.escalation_rate:.1%})")
    table.add_row("accuracy, edge only", f"{report.accuracy.edge_only:.2%}")
    table.add_row("accuracy, hub only", f"{report.accuracy.hub_only:.2%}")
    table.add_row("accuracy, cascade", f"{report.accuracy.cascade:.2%}")
    table.add_row("latency ms p50 / p95, local answers", _ms(report.latency_ms.local))
    table.add_row("latency ms p50 / p95, escalated", _ms(report.latency_ms.escalated))
    table.add_row("latency ms p50 / p95, hub only", _ms(report.latency_ms.hub_only))
    per = report.bytes.per_escalation
    table.add_row(
        "bytes per escalation vs raw upload",
        f"{per:.0f} vs {report.bytes.raw_input}" if per else f"- vs {report.bytes.raw_input}",
    )
    table.add_row("requests rejected by the hub", str(report.rejected))
    if report.attestation is not None:
        a = report.attestation
        table.add_row("hub attestation verdict", f"{a.status} ({a.tee})")
    pc = report.policy_check
    table.add_row("strict agent (default policy)", f"{pc.source} answer, reason {pc.reason}")
    if report.graph is not None:
        g = report.graph
        table.add_row(f"task graph {g.name}: ended early at the gate", f"{g.ended_early:.1%}")
        table.add_row("task graph: escalated (routed node at the hub)", f"{g.escalated:.1%}")
        table.add_row("task graph: accuracy", f"{g.accuracy:.2%}")
        table.add_row("task graph: latency ms p50 / p95", _ms(g.latency_ms))
    out.print(table)
    out.print(f"bytes per escalation vs raw upload: {report.bytes.note}")
    if report.simulated_tee:
        out.print(
            "[bold red]WARNING:[/] the hub ran with a SIMULATED enclave: its attestation "
            "evidence is INSECURE and proves nothing. The agent accepted it only because the "
            "demo set allow_simulated_tee; with the default policy it refused (last row)."
        )


def print_verdict(report: VerdictReport) -> None:
    out = Console()
    colour = {"affirming": "green", "warning": "yellow"}.get(report.status, "red")
    kind = "report" if report.tee == "sev-snp" else "quote"
    out.print(f"[bold {colour}]{report.status}[/]  {report.tee} {kind} v{report.quote_version}")
    out.print(f"cryptographic checks: {'passed' if report.crypto_ok else 'FAILED'}")
    if report.tcb_status is not None:
        advisories = ", ".join(report.advisory_ids) or "-"
        out.print(f"TCB status: {report.tcb_status}  advisories: {advisories}")
    if report.trailing_bytes:
        out.print(f"  {report.trailing_bytes} unsigned trailing bytes ignored")
    for name, value in report.measurements.items():
        out.print(f"  {name}: {value}")
    out.print(f"  report_data: {report.report_data}")
    for failure in report.failure_details:
        out.print(f"[red]  x {failure.check}[/]: {failure.message}")
    for relaxation in report.relaxations:
        out.print(f"[yellow]  ~ relaxed: {relaxation}[/]")


def _harm(a: AttackResult) -> str:
    """Flipped answers per attacker, and when it was quarantined (median message); "-" where
    no attacker device was simulated (refused by the pipeline, or honest traffic)."""
    if a.attacker_devices == 0:
        return "-"
    m = a.messages_to_quarantine
    when = "never quarantined" if m is None else f"quarantined at {m:g}"
    return f"{a.flipped_before_quarantine:g} ({when})"


def print_poisoning_report(report: PoisoningReport) -> None:
    out = Console()
    table = Table(
        title=f"Poisoning checks under attack: {report.dataset}, d={report.embedding_dim}"
    )
    columns = ("attack", "strength", "AUROC", "TPR@1%", "TPR@0.1%", "undetected success")
    for column in (*columns, "harm before quarantine"):
        table.add_column(column, justify="left" if column in ("attack", "strength") else "right")
    audited = [a for a in report.attacks if a.audit_reveal is not None]
    for a in report.attacks:
        if a.audit_reveal is None:
            table.add_row(
                a.name,
                a.strength,
                f"{a.auroc:.3f}",
                f"{a.tpr_at_1pct_fpr:.3f}",
                f"{a.tpr_at_01pct_fpr:.3f}",
                f"{a.undetected_success_rate:.3f}",
                _harm(a),
            )
    out.print(table)
    audits = Table(title="Attackers that answer audits: harm before quarantine")
    right = ("quarantined by 300", "harm before quarantine")
    for column in ("attack", "strength", "reveals", "audit rate", *right):
        audits.add_column(column, justify="right" if column in right else "left")
    for a in audited:
        audits.add_row(
            a.name,
            a.strength,
            a.audit_reveal,
            f"{a.audit_rate:.1%}",
            f"{a.quarantined_within_300:.0%}",
            _harm(a),
        )
    out.print(audits)
    groups = Table(title="Colluding groups: largest shift of each fleet statistic (whitened)")
    for column in ("statistic", "colluders", "bound", "optimiser", "in band", "plain mean"):
        groups.add_column(column, justify="left" if column == "statistic" else "right")
    for g in report.influence:
        if not g.learns_from_traffic:
            groups.add_row(g.statistic, str(g.colluders), "0", "static", "static", "-")
            continue
        groups.add_row(
            g.statistic,
            str(g.colluders),
            f"{g.bound:.4f}",
            f"{g.measured_unconstrained:.4f}",
            f"{g.measured_in_band:.4f}",
            f"{g.plain_mean_in_band:.4f}",
        )
    out.print(groups)
    for h in report.honest_fleet:
        out.print(
            f"honest, audits at {h.audit_rate:.1%}: {h.false_quarantines} false quarantines of "
            f"{h.devices} devices x {h.messages} messages ({h.audits} audits)"
        )
    d = report.drift
    out.print(
        f"slow drift: quarantined after {d.messages_to_quarantine} messages (worst device); "
        f"false quarantines {d.false_quarantines} of {d.honest_devices} honest devices"
    )
    c = report.cohort
    out.print(
        f"cohort: {c.colluders_flagged}/{c.colluders} colluders flagged, "
        f"{c.honest_flagged}/{c.honest_devices} honest devices flagged"
    )
    lat = report.latency_us
    out.print(f"per-request checks at d={lat.dim}: p50 {lat.p50:.1f} us, p99 {lat.p99:.1f} us")
