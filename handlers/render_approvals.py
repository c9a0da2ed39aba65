"""The approval card: one message per request, updated in place as it is decided."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.approvals.service import ApprovalStatus, ApprovalView
from bot.mrkdwn import code_span
from bot.redaction import redact
from handlers.render_blocks import SECTION_LIMIT, escape, escape_code

APPROVAL_ACTION = "aia_approval"
STATUS_LINE = {
    ApprovalStatus.PENDING: ":hourglass_flowing_sand: *Waiting for approval*",
    ApprovalStatus.APPROVED: ":white_check_mark: *Approved* — running",
    ApprovalStatus.EXECUTING: ":gear: *Running*",
    ApprovalStatus.EXECUTED: ":white_check_mark: *Done*",
    ApprovalStatus.FAILED: ":x: *Failed*",
    ApprovalStatus.DENIED: ":no_entry: *Denied*",
    ApprovalStatus.CANCELLED: ":heavy_multiplication_x: *Cancelled*",
    ApprovalStatus.EXPIRED: ":alarm_clock: *Expired* — nothing was run",
    ApprovalStatus.STALE: ":warning: *Stale* — the target changed; nothing was run",
}


def _code(text: str, limit: int = SECTION_LIMIT - 40) -> str:
    text = escape_code(redact(text))
    if len(text) > limit:
        text = text[: limit - 20] + "\n… (cut)"
    return f"```{text}```"


def render_card(view: ApprovalView) -> tuple[str, list[dict]]:
    who = f"<@{view.requester_id}>"
    approvals = ", ".join(f"<@{a['user']}>" for a in view.approvals) or "none yet"
    blocks: list[Block] = [
        HeaderBlock(text=f"Approval needed: /aia {view.procedure}"[:150]),
        SectionBlock(text=MarkdownTextObject(text=(
            f"{STATUS_LINE.get(view.status, view.status)}\n*{escape(redact(view.summary))}*\n"
            f"Requested by {who}: {code_span(redact('/aia ' + view.command[:300]))}"
        )[:SECTION_LIMIT])),
    ]
    if view.warning:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f":warning: {escape(redact(view.warning))}"[:SECTION_LIMIT])))
    blocks.append(SectionBlock(text=MarkdownTextObject(text="*Preview (server-side dry run)*\n" + _code(view.preview))))
    context = (f"Request `{view.id}` · approvals {len(view.approvals)}/{view.required_approvals} ({approvals}) · "
               f"expires <!date^{int(view.expires_at.timestamp())}^{{time}}|{view.expires_at:%H:%M UTC}>")
    if view.decided_by and view.status in (ApprovalStatus.DENIED, ApprovalStatus.CANCELLED, ApprovalStatus.APPROVED,
                                           ApprovalStatus.EXECUTED, ApprovalStatus.FAILED, ApprovalStatus.STALE):
        context += f" · decided by <@{view.decided_by}>"
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=context[:2000])]))
    if view.result and view.status in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED, ApprovalStatus.STALE,
                                       ApprovalStatus.EXPIRED):
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*Result:* {escape(redact(view.result))}"[:SECTION_LIMIT])))
    if view.status == ApprovalStatus.PENDING:
        blocks.append(ActionsBlock(block_id=f"approval-{view.id}", elements=[
            ButtonElement(text="Approve", action_id=f"{APPROVAL_ACTION}:approve", value=view.id, style="primary"),
            ButtonElement(text="Deny", action_id=f"{APPROVAL_ACTION}:deny", value=view.id, style="danger"),
            ButtonElement(text="Cancel", action_id=f"{APPROVAL_ACTION}:cancel", value=view.id),
        ]))
    text = escape(redact(f"Approval {view.status}: /aia {view.command}"))[:3000]
    return text, [b.to_dict() for b in blocks]
