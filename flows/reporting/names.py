"""What marketing reads instead of the code names: one glossary for the figures and columns, and
the display names of playbooks, steps and variants (their `label` in the playbook files, the
table `config.playbook_labels`) and of the channels. The database keeps the code names; the
report, the workbook and the notebooks show these, and the workbook's glossary sheet maps each
back to its code name for the analysts."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pandas as pd

# figure or column -> its name in the report (docs/analysis.md defines each)
GLOSSARY = {
    # the funnel and the campaign tables
    "planned": "计划数",
    "sent": "已发送",
    "still_open": "窗口未结束",
    "delivered": "已送达",
    "responded": "已响应",
    "customers": "触达客户",
    "converted": "已转化",
    "conversion_amount": "转化金额",
    "response_rate": "响应率",
    "conversion_rate": "转化率",
    "execution_rate": "执行率",
    "avg_lag_minutes": "平均延迟（分钟）",
    "done": "已完成",
    # the headline
    "opt_out_rate": "退订率",
    "delivery_failure_rate": "发送失败率",
    "repurchase_rate": "复购率",
    "complaint_rate": "投诉率",
    "dormant_reactivation_rate": "沉睡唤醒率",
    "avg_followup_cycle_days": "平均回访间隔（天）",
    "csat": "满意度 CSAT",
    "nps": "净推荐值 NPS",
    # who, what, when
    "playbook": "回访方案",
    "step": "步骤",
    "channel": "渠道",
    "channels": "渠道组合",
    "variant": "版本",
    "dimension": "维度",
    "value": "取值",
    "sent_date": "发送日期",
    "planned_for": "计划日期",
    "status": "状态",
    "reason": "原因",
    "customer_id": "客户编号",
    "owner_id": "负责人编号",
    "owner_name": "负责人",
    "kind": "类型",
    "overdue": "逾期",
    "due_by": "截止时间",
    "outcome": "结果",
    "done_at": "完成时间",
    "priority": "优先级",
    "task_id": "任务编号",
    "total": "合计",
    "open": "待办",
    "cancelled": "已取消",
    # feedback
    "responses": "反馈数",
    "csat_responses": "CSAT 答卷数",
    "nps_responses": "NPS 答卷数",
    "very_satisfied": "非常满意",
    "satisfied": "满意",
    "neutral": "一般",
    "unsatisfied": "不满意",
    "category": "问题类型",
    "share": "占比",
    "responded_at": "反馈时间",
    "response_type": "反馈类型",
    "satisfaction": "满意度",
    "score": "评分",
    "text": "内容",
    # A/B tests
    "experiment": "实验",
    "is_control": "对照组",
    "n": "样本（客户）",
    "conversions": "转化客户",
    "rate": "本组转化率",
    "rate_ci_low": "转化率下限",
    "rate_ci_high": "转化率上限",
    "abs_lift": "提升（百分点）",
    "ci_low": "提升下限",
    "ci_high": "提升上限",
    "rel_lift": "相对提升",
    "rel_ci_low": "相对提升下限",
    "rel_ci_high": "相对提升上限",
    "p_value": "p 值",
    "chance_to_beat_control": "胜过对照的概率",
    "srm_p_value": "分流检验 p 值",
    "min_sample": "最小样本",
    "decision": "结论",
    # period on period, channels, sales, segments, tiers (flows/reporting/marketing.py)
    "period_start": "本期开始",
    "period_end": "本期结束",
    "this_period_rate": "本期",
    "previous_period_rate": "上期",
    "change": "变化（百分点）",
    "previous_numerator": "上期分子",
    "previous_denominator": "上期分母",
    "send_failed": "发送被拒",
    "delivery_failures": "送达失败",
    "opted_out": "退订",
    "stage": "阶段",
    "leads_reached": "到达线索",
    "leads_lost_here": "止于此阶段（流失）",
    "leads_open_here": "停留于此阶段",
    "customer_count": "客户数",
    "buyers": "已购客户",
    "avg_total_amount": "平均累计消费",
    "avg_spend_6m": "近6个月平均消费",
    "avg_orders_6m": "近6个月平均订单",
    "avg_recency_days": "平均距上次购买（天）",
    "from_as_of_date": "起始日",
    "to_as_of_date": "截止日",
    "from_value": "原分层",
    "to_value": "新分层",
    "share_of_from": "占原分层",
    "direction": "方向",
    "metric": "指标",
    "numerator": "分子",
    "denominator": "分母",
    "definition": "定义",
}
CHANNELS = {
    "sms": "短信",
    "email": "邮件",
    "im": "企业微信/IM",
    "call": "电话",
    "visit": "上门拜访",
}
# the variants every step has without declaring them
VARIANTS = {"default": "默认", "holdout": "对照组（不发送）", "sent": "发送（各版本合计）"}
DIMENSIONS = {"tier": "会员等级", "owner": "负责人", "channel": "渠道", "variant": "版本"}
DIMENSIONS |= {"value_tier": "价值分层", "rfm_segment": "RFM 分群"}
# other values marketing reads: tiers, value tiers, lead stages, tier moves
VALUES = {"diamond": "钻石", "gold": "金卡", "silver": "银卡", "basic": "普通"}
VALUES |= {"high": "高价值", "mid": "中价值", "normal": "一般", "churned": "流失"}
VALUES |= {"lead_created": "新线索", "needs_analysis": "需求分析", "proposal": "方案报价"}
VALUES |= {"won": "成交", "same": "不变", "new": "新进", "upgrade": "升级"}
VALUES |= {"downgrade": "降级", "moved": "变动", "(new)": "（新客户）", "(no order)": "未下单"}
VALUES |= {"Champions": "重要价值", "Loyal": "忠诚", "Potential loyalist": "潜力忠诚"}
VALUES |= {"New": "新客", "Promising": "有潜力", "Need attention": "需关注"}
VALUES |= {"About to sleep": "即将沉睡", "At risk": "流失风险", "Can't lose": "不能失去"}
VALUES |= {"Hibernating": "沉睡", "Lost": "已流失"}
# the columns whose values are code names
_CODE_COLUMNS = ("playbook", "step", "variant", "channel", "channels", "experiment")
_CODE_COLUMNS += ("dimension", "from_value", "to_value", "stage", "direction", "metric")


def label(name: str) -> str:
    """What a figure or a column is called in the report (the name itself when the glossary
    has none)."""
    return GLOSSARY.get(name, name)


@dataclass(frozen=True)
class Names:
    """The display names of one database's playbooks, steps and variants."""

    playbooks: dict[str, str] = field(default_factory=dict)
    steps: dict[tuple[str, str], str] = field(default_factory=dict)
    variants: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, present: dict[str, set[str]]) -> Names:
        if "playbook_labels" not in present.get("config", set()):
            return cls()
        rows = con.execute(
            "select playbook, label, step, variant from config.playbook_labels"
        ).fetchall()
        return cls(
            playbooks={p: lab for p, lab, s, v in rows if s is None},
            steps={(p, s): lab for p, lab, s, v in rows if s is not None and v is None},
            variants={(p, s, v): lab for p, lab, s, v in rows if v is not None},
        )

    def playbook(self, code: str) -> str:
        return self.playbooks.get(code, code)

    def step(self, playbook: str, step: str) -> str:
        return self.steps.get((playbook, step), step)

    def variant(self, playbook: str, step: str, variant: str) -> str:
        return self.variants.get((playbook, step, variant), VARIANTS.get(variant, variant))

    def experiment(self, code: str) -> str:
        """`post_purchase_journey.day3_care.holdout` -> `购后关怀旅程 · 3天关怀 · 发送 vs
        不发送`."""
        playbook, _, rest = code.partition(".")
        step, _, holdout = rest.partition(".")
        shown = f"{self.playbook(playbook)} · {self.step(playbook, step)}" if step else code
        return f"{shown} · 发送 vs 不发送" if holdout == "holdout" else shown

    def shown(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` with the display name in place of each code name (playbook, step, variant,
        channel, experiment; a breakdown's dimension and value)."""
        if frame.empty or not set(_CODE_COLUMNS) & set(frame.columns):
            return frame
        out = frame.copy()
        code = {c: frame[c].astype(object) for c in _CODE_COLUMNS if c in frame.columns}
        playbooks = code.get("playbook")
        experiments = code.get("experiment")
        if experiments is not None:
            # an experiment's arms: `<playbook>.<step>`
            parts = experiments.map(lambda e: str(e).split(".")[:2] if _text(e) else [None, None])
            playbooks = parts.map(lambda p: p[0]) if playbooks is None else playbooks
            steps = parts.map(lambda p: p[1] if len(p) > 1 else None)
            out["experiment"] = experiments.map(lambda e: self.experiment(e) if _text(e) else e)
        else:
            steps = code.get("step")
        if "step" in code and playbooks is not None:
            out["step"] = [
                self.step(p, s) if _text(p) and _text(s) else s
                for p, s in zip(playbooks, code["step"], strict=True)
            ]
        if "variant" in code and playbooks is not None and steps is not None:
            out["variant"] = [
                self.variant(p, s, v) if _text(p) and _text(s) and _text(v) else v
                for p, s, v in zip(playbooks, steps, code["variant"], strict=True)
            ]
        elif "variant" in code:
            out["variant"] = code["variant"].map(lambda v: VARIANTS.get(v, v))
        if "playbook" in code:
            out["playbook"] = code["playbook"].map(lambda p: self.playbook(p) if _text(p) else p)
        for column in ("channel", "channels"):
            if column in code:
                out[column] = code[column].map(_channels)
        if {"dimension", "value"} <= set(frame.columns):
            out["value"] = [
                _channels(v) if d == "channel" else VALUES.get(v, v)
                for d, v in zip(frame["dimension"], frame["value"], strict=True)
            ]
        if "dimension" in frame.columns:
            out["dimension"] = frame["dimension"].map(lambda d: DIMENSIONS.get(d, d))
        for column in ("from_value", "to_value", "stage", "direction"):
            if column in frame.columns:
                out[column] = frame[column].map(lambda v: VALUES.get(v, v))
        if "metric" in frame.columns:
            out["metric"] = frame["metric"].map(lambda m: label(m) if _text(m) else m)
        return out

    def glossary(self) -> pd.DataFrame:
        """Every display name with its code name, for the workbook's glossary sheet."""
        rows = [("指标/列", code, name) for code, name in GLOSSARY.items()]
        rows += [("渠道", code, name) for code, name in CHANNELS.items()]
        rows += [("回访方案", code, name) for code, name in self.playbooks.items()]
        rows += [("步骤", f"{p}.{s}", name) for (p, s), name in self.steps.items()]
        rows += [("版本", f"{p}.{s}.{v}", name) for (p, s, v), name in self.variants.items()]
        return pd.DataFrame(rows, columns=["kind", "code", "name"])


def _text(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _channels(value: object) -> object:
    """`call+sms` -> `电话+短信`."""
    if not _text(value):
        return value
    return "+".join(CHANNELS.get(part, part) for part in str(value).split("+"))
