"""The seeded synthetic CX world: customers, journeys, orders, feedback and experiments, with
the ground truth that generated them.

Every number that defines the world is in :data:`WORLD` (and written to ``truth/truth.json``),
so each notebook has something true to find, and something that a careless method gets wrong:

- five hidden behavioural personas that differ in channels, frequency, consideration time,
  basket, discounts, service contacts and satisfaction; they **overlap** (each customer's
  channel mix is a Dirichlet draw around the persona's, concentration 25) and **drift**
  (10% of customers switch to another persona at a uniform time of 2025: ``persona_end``,
  ``switched_at`` in ``truth/personas.parquet``); demographics only weakly tilted, with one
  **small real effect** (order value x0.92 for low and x1.12 for high income, within persona);
- journeys through ``visit -> product_view -> add_to_cart -> checkout -> purchase`` across
  channels with persona-specific drop-off, repeated steps and timestamp ties;
- planted pain point: checkout in the app completes far less often (42% against 72%); late
  deliveries drive support contacts and low NPS;
- a **confounded channel**: step rates depend on the persona only (except app checkout), so
  the store's visit -> product_view cell looks bad only because store visits are mostly
  assisted shoppers' (who drop off after a visit most, and come least often); adjusted for
  persona it is no pain point (``confounded_channels``);
- **inert touches**: email opens and social clicks precede journeys that would happen anyway;
  their incremental effect is zero (``channel_effects``), whatever path-based attribution
  credits them;
- feedback more likely after a bad experience, comments built from theme vocabularies
  (occasionally with fake personal details, to exercise redaction);
- four experiments with realistic effects: a one-page checkout triggered at checkout (+10%
  relative completion of that checkout; it also shows the survey on its confirmation page,
  so **treatment changes who responds**: treated buyers answer 3x as often), a null, a
  persona-only effect of a few percent, and a sample-ratio mismatch. ``truth.json`` holds
  each planted lift as the *realised* average treatment effect in the customers assigned
  (``experiments.*.expected_abs_lift``, ``realised``).

Calibration
-----------
Orders of magnitude of an ordinary online retailer (published benchmark ranges, quoted from
memory; the demo's own figures, 5,000 customers, seed 42, are in ``truth.json``
``calibration``):

- session (visit) -> purchase conversion 2-4% (e.g. IRP Commerce, Littledata and Shopify
  benchmark reports: 1.5-3% typical for e-commerce; Baymard Institute's cart abandonment
  ~70%): here 4.2% of the generator's attempts convert within 7 days, 7% of the funnel's
  attempts (which merge a customer's visits within the 7-day window into one);
- checkout completion 60-80% once checkout starts (Baymard's checkout-usability studies):
  72% outside the app;
- average order value 70-120 in the shop's currency (Salesforce Shopping Index and Shopify
  AOV reports: ~$80-110 across retail): here ~104;
- a customer base in which about half buys in a year and 25-50% of buyers buy again in the
  year (repeat-customer rates of 20-40% quoted by Shopify and Metrilo, higher for an
  account base): here ~1.2 orders per customer per year, 56% buyers, ~51% of them repeat
  (the top of the range: an account base, no guest checkouts);
- NPS of online retail between about 0 and +50 (Bain's NPS benchmarks and Retently's
  industry figures: e-commerce around +30 to +45, with detractor-skewed samples lower):
  here about +21 overall, detractor-heavy after late deliveries and abandoned checkouts;
- 12% of deliveries late (on-time delivery rates of 85-95% are typical of parcel
  carriers' published figures);
- A/B test lifts of a few percent (Kohavi, Tang & Xu, *Trustworthy Online Controlled
  Experiments*: most ideas move key metrics by less than 10%, many by nothing): +10%
  relative on the checkout test (realised +9.7%, +6.0 points on a ~61% baseline: only a
  test triggered at checkout can nearly afford it at the demo size, whose minimum
  detectable lift at 80% power is ~11%; the demo draw does not detect it, the report says
  "keep testing" and its interval covers the truth), a few percent on the persona-only
  test (not detectable at this size). The effect the demo does detect is the checkout
  test's change of the survey response rate (+7.3 points, p < 0.001), the planted SRM
  and, outside the experiments, the app checkout pain point.

Customers are generated in chunks with an independent random stream per chunk
(``default_rng([seed, chunk])``) and streamed to Parquet, so memory is bounded by the chunk
size. Same ``seed`` and ``chunk_size``, same bytes.

Model
-----
Customer ``i`` of persona ``p`` starts journeys ("attempts") as a Poisson process over
``[max(signup, 2025-01-01), 2025-12-31]`` with yearly rate ``attempts_per_year[p] * g_i``,
``g_i ~ Gamma(k, 1/k)`` (frailty: stable individual differences, which CUPED exploits); a
customer who switches persona follows the new persona's journey, channel, basket and
feedback parameters from ``switched_at`` (drawn uniformly over 2025, so a customer who signed
up after it behaves as ``persona_end`` from the start; demographics, loyalty logins and
service contacts unrelated to a journey keep the starting ``persona``).
An attempt reaches each next funnel step with persona-specific probabilities; checkout to
purchase depends on the checkout channel (the planted pain point). Times between steps are
exponential with persona-specific means. Events after the end of the data are cut, so late
attempts are still in progress.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cxanalysis.progress import bar as progress_bar
from cxanalysis.schema import CHANNELS

PERSONAS: tuple[str, ...] = (
    "bargain_hunter",
    "loyal_app_regular",
    "digital_researcher",
    "assisted_shopper",
    "convenience_buyer",
)
FUNNEL: tuple[str, ...] = ("visit", "product_view", "add_to_cart", "checkout", "purchase")
_CH = {c: i for i, c in enumerate(CHANNELS)}
_DAY_US = 86_400 * 1_000_000
_HOUR_US = 3_600 * 1_000_000
START = pd.Timestamp("2025-01-01", tz="UTC")
END = pd.Timestamp("2026-01-01", tz="UTC")  # exclusive: data covers 2025 (UTC)
_DAYS = 365


def _shares(**kw: float) -> tuple[float, ...]:
    """Channel shares in :data:`CHANNELS` order (unnamed channels get 0), normalised."""
    v = np.array([kw.get(c, 0.0) for c in CHANNELS])
    return tuple(float(x) for x in v / v.sum())


@dataclass(frozen=True)
class Persona:
    """Behaviour of one hidden persona (rates per year, times in hours, money in currency)."""

    weight: float
    attempts_per_year: float
    browse_channels: tuple[float, ...]
    buy_channels: tuple[float, ...]
    intro_channels: tuple[float, ...]
    p_intro: float  # chance an attempt starts with an awareness touch
    p_step: tuple[float, float, float]  # visit->view, view->cart, cart->checkout
    gap_hours: tuple[float, float, float, float]  # mean hours between consecutive steps
    research_events: float  # mean search/compare/review_read events per attempt
    basket: float  # median order value before discount
    p_discount: float
    discount_share: float
    service_contacts_per_year: float
    p_support_base: float  # chance of a support contact after an on-time order
    support_channel: str
    logins_per_year: float
    nps_base: float


WORLD_PERSONAS: dict[str, Persona] = {
    # Per-attempt visit -> purchase: 2.6%, 3.4%, 2.4%, 5.9%, 7.2% (2-4% is the usual
    # e-commerce session conversion; assisted and convenience shoppers arrive decided).
    "bargain_hunter": Persona(
        weight=0.22, attempts_per_year=36,
        browse_channels=_shares(web=0.45, app=0.2, store=0.05, email=0.12, social=0.18),
        buy_channels=_shares(web=0.7, app=0.25, store=0.05),
        intro_channels=_shares(email=0.55, social=0.45), p_intro=0.6,
        p_step=(0.6, 0.16, 0.42), gap_hours=(0.2, 24, 6, 0.05), research_events=0.6,
        basket=45, p_discount=0.8, discount_share=0.2, service_contacts_per_year=0.5,
        p_support_base=0.04, support_channel="chat", logins_per_year=2, nps_base=8.6),
    "loyal_app_regular": Persona(
        weight=0.20, attempts_per_year=45,
        browse_channels=_shares(app=0.72, web=0.2, store=0.08),
        buy_channels=_shares(app=0.85, web=0.15),
        intro_channels=_shares(app=0.6, email=0.3, social=0.1), p_intro=0.35,
        p_step=(0.65, 0.2, 0.6), gap_hours=(0.05, 0.5, 0.3, 0.02), research_events=0.2,
        basket=55, p_discount=0.15, discount_share=0.1, service_contacts_per_year=0.4,
        p_support_base=0.03, support_channel="chat", logins_per_year=30, nps_base=9.4),
    "digital_researcher": Persona(
        weight=0.20, attempts_per_year=30,
        browse_channels=_shares(web=0.72, app=0.12, social=0.1, chat=0.06),
        buy_channels=_shares(web=0.85, app=0.15),
        intro_channels=_shares(social=0.5, web=0.5), p_intro=0.4,
        p_step=(0.7, 0.14, 0.35), gap_hours=(0.3, 72, 24, 0.05), research_events=3,
        basket=130, p_discount=0.15, discount_share=0.1, service_contacts_per_year=0.5,
        p_support_base=0.03, support_channel="chat", logins_per_year=2, nps_base=8.9),
    "assisted_shopper": Persona(
        # walks into the store to look, rarely to buy at once: the store's first step looks
        # bad only because store visits are mostly theirs (the planted confounded channel)
        weight=0.18, attempts_per_year=12,
        browse_channels=_shares(store=0.5, call_centre=0.22, web=0.22, chat=0.06),
        buy_channels=_shares(store=0.6, call_centre=0.22, web=0.18),
        intro_channels=_shares(email=0.6, social=0.4), p_intro=0.4,
        p_step=(0.5, 0.25, 0.6), gap_hours=(0.5, 48, 2, 0.1), research_events=0.5,
        basket=95, p_discount=0.1, discount_share=0.1, service_contacts_per_year=2,
        p_support_base=0.12, support_channel="call_centre", logins_per_year=1, nps_base=9.0),
    "convenience_buyer": Persona(
        weight=0.20, attempts_per_year=18,
        browse_channels=_shares(app=0.4, web=0.48, store=0.12),
        buy_channels=_shares(app=0.3, web=0.6, store=0.1),
        intro_channels=_shares(social=0.5, email=0.5), p_intro=0.3,
        p_step=(0.75, 0.35, 0.75), gap_hours=(0.02, 0.1, 0.1, 0.01), research_events=0.1,
        basket=140, p_discount=0.05, discount_share=0.05, service_contacts_per_year=0.3,
        p_support_base=0.03, support_channel="chat", logins_per_year=3, nps_base=9.1),
}


@dataclass(frozen=True)
class Experiment:
    """A planted experiment.

    Two mechanisms. With ``trigger="checkout"`` customers are assigned at their first
    checkout between ``start`` and ``end`` (a triggered test: only customers who reach the
    changed page are in it), and ``effect`` is the *relative* rise in the chance that this
    checkout completes (abandoned checkouts of treated customers are rescued with the chance
    that raises completion by ``effect``). Without a trigger, eligible customers are assigned
    at a uniform time and ``effect`` is the chance that a treated customer makes one extra,
    fully converting purchase journey within 10 days of assignment (an absolute chance,
    chosen small so that the relative lift on 14-day conversion is a few percent).
    ``survey_boost`` multiplies, for treated customers, the chance of answering the survey
    sent after the triggering checkout (treatment changes who responds)."""

    experiment_id: str
    name: str
    hypothesis: str
    start: str
    end: str
    p_treatment: float  # delivered share of treatment (planned is always 50/50)
    effect: float
    persona: str | None = None  # only this persona responds (None: everyone)
    eligibility: float = 0.8
    trigger: str | None = None  # "checkout": assigned at the first checkout in the dates
    survey_boost: float = 1.0


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("exp_checkout_redesign", "One-page checkout",
               "A one-page checkout raises 14-day conversion of customers who reach checkout.",
               "2025-10-01", "2025-12-15", 0.5, effect=0.10, eligibility=1.0,
               trigger="checkout", survey_boost=3.0),
    Experiment("exp_email_subject", "Personalised email subject",
               "A personalised subject line raises 14-day conversion.",
               "2025-10-01", "2025-11-15", 0.5, effect=0.0),
    Experiment("exp_app_onboarding", "New app onboarding",
               "A guided app onboarding raises conversion of app users.",
               "2025-10-15", "2025-11-15", 0.5, effect=0.004, persona="loyal_app_regular"),
    Experiment("exp_srm_banner", "Homepage banner",
               "A homepage banner raises conversion (assignment bug: SRM).",
               "2025-11-01", "2025-11-30", 0.55, effect=0.0),
)


@dataclass(frozen=True)
class World:
    """Parameters of the world that are not per persona."""

    frailty_shape: float = 2.0
    p_purchase_after_checkout: float = 0.72
    p_purchase_after_checkout_app: float = 0.42  # planted pain point
    p_late_delivery: float = 0.12
    p_support_if_late: float = 0.5
    nps_penalty_late: float = 4.0
    nps_penalty_support: float = 1.5
    nps_penalty_abandoned: float = 3.0
    p_feedback_good: float = 0.15
    p_feedback_bad: float = 0.30  # after a late delivery or support contact
    p_feedback_abandoned: float = 0.03
    p_comment: float = 0.6
    p_pii_in_comment: float = 0.05
    p_repeat_view: float = 0.25
    p_tie_view_cart: float = 0.05
    # overlap: per-customer channel mixes are Dirichlet draws around the persona's with this
    # concentration (lower: personas overlap more)
    channel_concentration: float = 25.0
    # drift: this share of customers switch to another persona at a uniform time of the year
    p_persona_switch: float = 0.10
    # demographics with a small real effect: order value multiplier by income band
    basket_by_income: tuple[float, float, float] = (0.92, 1.0, 1.12)  # low, mid, high
    # survey after a triggered experiment's checkout (chance of answering, control arm)
    p_survey_response: float = 0.08
    window_days: int = 14
    pre_period_days: int = 90
    signup_start: str = "2022-01-01"
    signup_end: str = "2025-06-30"
    personas: dict[str, Persona] = field(default_factory=lambda: dict(WORLD_PERSONAS))
    experiments: tuple[Experiment, ...] = EXPERIMENTS


WORLD = World()

#: Name of the only persona of a world without persona structure (``--personas 1``).
NO_STRUCTURE_PERSONA = "everyone"


def blended_persona(personas: Mapping[str, Persona] = WORLD_PERSONAS) -> Persona:
    """One persona whose every parameter is the weight-averaged parameter of ``personas``
    (channel shares averaged then renormalised; the support channel of the heaviest
    persona): the same overall behaviour without any structure to find."""
    ps = list(personas.values())
    w = np.array([p.weight for p in ps]) / sum(p.weight for p in ps)

    def avg(attr: str) -> Any:
        v = np.array([getattr(p, attr) for p in ps], dtype=float)
        m = np.tensordot(w, v, axes=1)
        return float(m) if m.ndim == 0 else tuple(float(x) for x in m)

    out: dict[str, Any] = {}
    for f in fields(Persona):
        if f.name == "weight":
            out[f.name] = 1.0
        elif f.name == "support_channel":
            out[f.name] = ps[int(np.argmax(w))].support_channel
        else:
            out[f.name] = avg(f.name)
    for f in ("browse_channels", "buy_channels", "intro_channels"):
        v = np.array(out[f])
        out[f] = tuple(float(x) for x in v / v.sum())
    return Persona(**out)


def world_with_personas(n: int, world: World = WORLD) -> World:
    """``world`` with ``n`` hidden personas: ``n`` equal to the number of its personas gives
    ``world`` itself (the default demo, byte for byte); 2 to 4 keep the first ``n`` (their
    weights renormalise when drawn); 1 is a world without persona structure, a single
    :func:`blended_persona` named :data:`NO_STRUCTURE_PERSONA`. Experiments aimed at a
    persona that is not in the world affect nobody."""
    have = len(world.personas)
    if not 1 <= n <= have:
        raise ValueError(f"personas must be between 1 and {have}, not {n}")
    if n == have:
        return world
    if n == 1:
        return replace(world, personas={NO_STRUCTURE_PERSONA: blended_persona(world.personas)})
    return replace(world, personas=dict(itertools.islice(world.personas.items(), n)))

_DEMOGRAPHICS: dict[str, tuple[str, ...]] = {
    "age_band": ("18-24", "25-34", "35-44", "45-54", "55-64", "65+"),
    "gender": ("female", "male", "other"),
    "region": ("north", "south", "east", "west", "capital"),
    "income_band": ("low", "mid", "high"),
}
_DEMO_BASE: dict[str, tuple[float, ...]] = {
    "age_band": (0.12, 0.22, 0.22, 0.18, 0.15, 0.11),
    "gender": (0.5, 0.47, 0.03),
    "region": (0.2, 0.2, 0.2, 0.2, 0.2),
    "income_band": (0.3, 0.45, 0.25),
}
# Weak tilts (multiplicative) so that segments and personas really disagree.
_DEMO_TILT: dict[str, dict[str, tuple[float, ...]]] = {
    "loyal_app_regular": {"age_band": (1.3, 1.3, 1.1, 0.9, 0.7, 0.6)},
    "assisted_shopper": {"age_band": (0.7, 0.8, 0.9, 1.1, 1.3, 1.5)},
    "bargain_hunter": {"income_band": (1.3, 1.0, 0.7)},
    "convenience_buyer": {"income_band": (0.8, 1.0, 1.3)},
}

THEMES: dict[str, dict[str, tuple[str, ...]]] = {
    "delivery_delay": {
        "neg": ("parcel arrived days late", "delivery was late again and nobody told me",
                "still waiting for my order, tracking never updated",
                "late delivery ruined the gift"),
        "pos": ("delivery was quick this time",),
    },
    "checkout_friction": {
        "neg": ("checkout kept failing at payment", "could not apply my voucher at checkout",
                "payment page timed out twice", "too many steps to pay"),
        "pos": ("checkout was simple",),
    },
    "app_usability": {
        "neg": ("the app crashed when I tried to pay", "app checkout button does nothing",
                "app logged me out at checkout", "app is slow and confusing at payment"),
        "pos": ("love the app, quick and easy", "app reorder is so convenient"),
    },
    "price_value": {
        "neg": ("prices went up, found it cheaper elsewhere", "discount was smaller than promised"),
        "pos": ("great deal with the sale price", "good value with the coupon"),
    },
    "staff_helpful": {
        "neg": ("waited 40 minutes on the phone", "agent could not solve my problem"),
        "pos": ("staff in store were really helpful", "the agent sorted it out quickly"),
    },
    "product_range": {
        "neg": ("could not find the model I compared online", "range is limited"),
        "pos": ("great range and detailed reviews", "found exactly what I wanted"),
    },
}
_FAKE_PII = ("My name is Alex Murphy and my email is alex.murphy@example.com",
             "call me on +44 20 7946 0123", "I spoke to agent Priya about it",
             "my customer number is C9912345")

_EVENT_STAGE = {
    "ad_impression": "awareness", "email_open": "awareness", "social_click": "awareness",
    "visit": "discovery", "product_view": "discovery", "search": "consideration",
    "compare": "consideration", "review_read": "consideration", "add_to_cart": "consideration",
    "checkout": "purchase", "purchase": "purchase", "delivery_update": "delivery",
    "delivery_late": "delivery", "support_contact": "delivery", "loyalty_login": "retention",
}
_INTRO_EVENT = {"email": "email_open", "social": "social_click"}  # others: ad_impression
_EVENT_ORDER = {e: i for i, e in enumerate(
    ["ad_impression", "email_open", "social_click", "visit", "product_view", "search",
     "compare", "review_read", "add_to_cart", "checkout", "purchase", "delivery_update",
     "delivery_late", "support_contact", "loyalty_login"])}

_TS = pa.timestamp("us", tz="UTC")
SCHEMAS: dict[str, pa.Schema] = {
    "customers": pa.schema([("customer_id", pa.string()), ("signup_date", pa.date32()),
                            ("age_band", pa.string()), ("gender", pa.string()),
                            ("region", pa.string()), ("income_band", pa.string())]),
    "events": pa.schema([("customer_id", pa.string()), ("ts", _TS), ("channel", pa.string()),
                         ("event", pa.string()), ("stage", pa.string())]),
    "orders": pa.schema([("order_id", pa.string()), ("customer_id", pa.string()), ("ts", _TS),
                         ("channel", pa.string()), ("amount", pa.float64()),
                         ("discount", pa.float64())]),
    "feedback": pa.schema([("customer_id", pa.string()), ("ts", _TS), ("channel", pa.string()),
                           ("event", pa.string()), ("nps", pa.int16()), ("csat", pa.int16()),
                           ("effort", pa.int16()), ("comment", pa.string())]),
    "assignments": pa.schema([("experiment_id", pa.string()), ("customer_id", pa.string()),
                              ("variant", pa.string()), ("assigned_at", _TS)]),
}
TRUTH_SCHEMAS: dict[str, pa.Schema] = {
    "personas": pa.schema([("customer_id", pa.string()), ("persona", pa.string()),
                           ("persona_end", pa.string()), ("switched_at", _TS)]),
    "feedback_themes": pa.schema([("customer_id", pa.string()), ("ts", _TS),
                                  ("event", pa.string()), ("theme", pa.string()),
                                  ("sentiment", pa.string())]),
}


# --------------------------------------------------------------------------- helpers


def _draw_categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (rows sum to 1)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None]
    return np.minimum((u > cum).sum(axis=1), probs.shape[1] - 1)


def _dirichlet_rows(rng: np.random.Generator, base: np.ndarray, concentration: float
                    ) -> np.ndarray:
    """Per-row Dirichlet draws around ``base`` rows (zero shares stay zero)."""
    alpha = base * concentration
    g = np.where(alpha > 0, rng.gamma(np.maximum(alpha, 1e-9)), 0.0)
    return g / g.sum(axis=1, keepdims=True)


def _exp_us(rng: np.random.Generator, mean_hours: np.ndarray) -> np.ndarray:
    return (rng.exponential(1.0, len(mean_hours)) * mean_hours * _HOUR_US).astype(np.int64)


@dataclass
class _Events:
    """Columnar event rows being assembled for one chunk."""

    cust: list[np.ndarray] = field(default_factory=list)
    ts: list[np.ndarray] = field(default_factory=list)
    channel: list[np.ndarray] = field(default_factory=list)
    event: list[np.ndarray] = field(default_factory=list)

    def add(self, cust: np.ndarray, ts: np.ndarray, channel: np.ndarray, event: str | np.ndarray
            ) -> None:
        self.cust.append(cust)
        self.ts.append(ts)
        self.channel.append(channel)
        ev = np.full(len(cust), _EVENT_ORDER[event], np.int16) if isinstance(event, str) \
            else event.astype(np.int16)
        self.event.append(ev)


# --------------------------------------------------------------------------- chunk


def _index(names: list[str], name: str) -> int:
    """Position of ``name`` in ``names``; -1 (matches no persona) when it is absent."""
    return names.index(name) if name in names else -1


def _chunk(rng: np.random.Generator, first_id: int, n: int, world: World
           ) -> tuple[dict[str, pa.Table], dict[str, pa.Table], dict[str, float]]:
    names = list(world.personas)
    P = [world.personas[p] for p in names]
    weights = np.array([p.weight for p in P])
    pid = rng.choice(len(P), n, p=weights / weights.sum())
    ids = np.array([f"C{first_id + i:07d}" for i in range(n)], dtype=object)

    # ---- customers: signup and weakly tilted demographics
    s0 = pd.Timestamp(world.signup_start).value // _DAY_US // 1000
    s1 = pd.Timestamp(world.signup_end).value // _DAY_US // 1000
    signup_day = rng.integers(s0, s1 + 1, n)  # days since epoch
    demo = {}
    demo_idx = {}
    for col, values in _DEMOGRAPHICS.items():
        base = np.array(_DEMO_BASE[col])
        probs = np.tile(base, (len(P), 1))
        for k, name in enumerate(names):
            tilt = _DEMO_TILT.get(name, {}).get(col)
            if tilt is not None:
                probs[k] *= np.array(tilt)
        probs /= probs.sum(axis=1, keepdims=True)
        demo_idx[col] = _draw_categorical(rng, probs[pid])
        demo[col] = np.array(values, dtype=object)[demo_idx[col]]
    # the small real effect of a demographic: order value by income band
    basket_mult = np.array(world.basket_by_income)[demo_idx["income_band"]]

    # ---- drift: some customers switch persona at a uniform time of the year
    start_us = START.value // 1000
    end_us = END.value // 1000
    switch = rng.random(n) < world.p_persona_switch if len(P) > 1 else np.zeros(n, bool)
    pid_late = np.where(switch, (pid + rng.integers(1, max(len(P), 2), n)) % len(P), pid)
    switch_us = np.where(switch, start_us + (rng.random(n) * _DAYS * _DAY_US).astype(np.int64),
                         np.iinfo(np.int64).max)

    # ---- per-customer behaviour around the persona means (before and after a switch)
    frailty = rng.gamma(world.frailty_shape, 1 / world.frailty_shape, n)
    conc = world.channel_concentration
    mixes = {}
    for key, attr in (("browse", "browse_channels"), ("buy", "buy_channels"),
                      ("intro", "intro_channels")):
        table = np.array([getattr(p, attr) for p in P])
        mixes[key] = (_dirichlet_rows(rng, table[pid], conc),
                      _dirichlet_rows(rng, table[pid_late], conc))
    epoch_day0 = start_us // _DAY_US
    active_from = np.maximum(signup_day - epoch_day0, 0).astype(float)  # days into 2025
    active_days = _DAYS - active_from
    # attempts follow the persona of the day: integrate the rate over the two periods
    rate0 = np.array([p.attempts_per_year for p in P])[pid]
    rate1 = np.array([p.attempts_per_year for p in P])[pid_late]
    sw_day = np.clip((switch_us - start_us) / _DAY_US, active_from, _DAYS)
    n_att0 = rng.poisson(rate0 * frailty * (sw_day - active_from) / _DAYS)
    n_att1 = rng.poisson(rate1 * frailty * (_DAYS - sw_day) / _DAYS)

    ev = _Events()
    orders: list[tuple[np.ndarray, ...]] = []
    fb: list[tuple[np.ndarray, ...]] = []
    checkouts: list[tuple[np.ndarray, ...]] = []
    stats: dict[str, float] = {"customers": n, "attempts": 0, "attempts_converted_7d": 0}
    att = np.array([_EVENT_ORDER[_INTRO_EVENT.get(c, "ad_impression")] for c in CHANNELS])

    def fulfil(oc: np.ndarray, pts: np.ndarray, och: np.ndarray, po: np.ndarray) -> None:
        """Orders of customers ``oc`` at ``pts`` (us) in channel ``och`` by persona ``po``:
        the purchase's delivery, late deliveries, support contacts and feedback."""
        o = len(oc)
        gross = np.array([p.basket for p in P])[po] * basket_mult[oc] * rng.lognormal(0, 0.45, o)
        disc = np.where(rng.random(o) < np.array([p.p_discount for p in P])[po],
                        gross * np.array([p.discount_share for p in P])[po]
                        * rng.uniform(0.5, 1.5, o), 0.0)
        amount = np.round(gross - disc, 2)
        orders.append((oc, pts, och, amount, np.round(disc, 2)))
        dts = pts + (rng.uniform(1, 3, o) * _DAY_US).astype(np.int64)
        ev.add(oc, dts, np.full(o, _CH["email"]), "delivery_update")
        late = rng.random(o) < world.p_late_delivery
        lts = dts + (rng.uniform(2, 5, o) * _DAY_US).astype(np.int64)
        ev.add(oc[late], lts[late], np.full(late.sum(), _CH["email"]), "delivery_late")
        p_sup = np.where(late, world.p_support_if_late,
                         np.array([p.p_support_base for p in P])[po])
        sup = rng.random(o) < p_sup
        sch = np.array([_CH[p.support_channel] for p in P])[po]
        sts = np.where(late, lts, dts) + _exp_us(rng, np.full(o, 12.0))
        ev.add(oc[sup], sts[sup], sch[sup], "support_contact")
        bad = late | sup
        give = rng.random(o) < np.where(bad, world.p_feedback_bad, world.p_feedback_good)
        fts = np.maximum(np.where(late, lts, dts), sts * sup) + _exp_us(rng, np.full(o, 24.0))
        penalty = world.nps_penalty_late * late + world.nps_penalty_support * sup
        theme = np.where(late, "delivery_delay",
                         np.where(sup, "staff_helpful",
                                  np.array(["price_value", "app_usability", "product_range",
                                            "staff_helpful", "product_range"])[po % 5]))
        fb.append((oc[give], fts[give], och[give], np.full(give.sum(), "delivery"),
                   penalty[give], theme[give], bad[give], po[give]))

    def funnel(att_c: np.ndarray, t0: np.ndarray, forced: bool) -> None:
        """Journeys of customers ``att_c`` starting (first visit) at ``t0`` (us)."""
        a = len(att_c)
        if a == 0:
            return
        late_p = t0 >= switch_us[att_c]  # the customer has drifted to their later persona
        pa_ = np.where(late_p, pid_late[att_c], pid[att_c])

        def mix(key: str) -> np.ndarray:
            before, after = mixes[key]
            return np.where(late_p[:, None], after[att_c], before[att_c])

        browse, buy, intro = mix("browse"), mix("buy"), mix("intro")
        gaps = np.array([p.gap_hours for p in P])[pa_]
        pstep = np.array([p.p_step for p in P])[pa_]
        # awareness touch before the visit: it precedes a journey that happens anyway (the
        # touch is inert: it changes neither whether nor how the journey converts)
        has_intro = (rng.random(a) < np.array([p.p_intro for p in P])[pa_]) & (not forced)
        ich = _draw_categorical(rng, intro)
        its = t0 - _exp_us(rng, np.full(a, 12.0))
        ievent = att[ich]
        m = has_intro
        ev.add(att_c[m], its[m], ich[m], ievent[m])
        # visit -> product_view -> add_to_cart -> checkout
        reached = np.ones(a, bool)
        ts = t0.copy()
        step_ts = [t0]
        step_ch = [_draw_categorical(rng, browse)]
        for k in range(3):
            cont = rng.random(a) < pstep[:, k] if not forced else np.ones(a, bool)
            reached = reached & cont
            gap = _exp_us(rng, gaps[:, k] if not forced else np.full(a, 0.05))
            if k == 1:  # occasional exact tie between product_view and add_to_cart
                gap = np.where(rng.random(a) < world.p_tie_view_cart, 0, gap)
            ts = ts + gap
            step_ts.append(ts.copy())
            step_ch.append(_draw_categorical(rng, buy) if k == 2
                           else _draw_categorical(rng, browse))
            if k == 0:
                levels = [np.ones(a, bool), reached.copy()]
            else:
                levels.append(reached.copy())
        # checkout -> purchase: the planted app pain point
        chk_ch = step_ch[3]
        p_buy = np.where(chk_ch == _CH["app"], world.p_purchase_after_checkout_app,
                         world.p_purchase_after_checkout)
        bought = levels[3] & ((rng.random(a) < p_buy) | forced)
        pts = ts + _exp_us(rng, gaps[:, 3])
        for k, name in enumerate(FUNNEL[:4]):
            m = levels[k]
            ev.add(att_c[m], step_ts[k][m], step_ch[k][m], name)
        ev.add(att_c[bought], pts[bought], chk_ch[bought], "purchase")
        if not forced:
            l3 = levels[3]
            checkouts.append((att_c[l3], step_ts[3][l3], chk_ch[l3], bought[l3], pa_[l3]))
            stats["attempts"] += a
            stats["attempts_converted_7d"] += int((bought & (pts - t0 <= 7 * _DAY_US)).sum())
        # repeated product views and research events
        rep = levels[1] & (rng.random(a) < world.p_repeat_view)
        ev.add(att_c[rep], step_ts[1][rep] + _exp_us(rng, np.full(a, 0.1))[rep],
               step_ch[1][rep], "product_view")
        n_res = rng.poisson(np.array([p.research_events for p in P])[pa_] * levels[1])
        if n_res.sum():
            ri = np.repeat(np.arange(a), n_res)
            span = np.maximum(step_ts[2][ri] - step_ts[1][ri], _HOUR_US)
            rts = step_ts[1][ri] + (rng.random(len(ri)) * span).astype(np.int64)
            rev = rng.choice([_EVENT_ORDER["search"], _EVENT_ORDER["compare"],
                              _EVENT_ORDER["review_read"]], len(ri))
            ev.add(att_c[ri], rts, step_ch[1][ri], rev)
        fulfil(att_c[bought], pts[bought], chk_ch[bought], pa_[bought])
        # abandoned checkouts give feedback too
        ab = levels[3] & ~bought
        give_ab = ab & (rng.random(a) < world.p_feedback_abandoned)
        ab_theme = np.where(chk_ch == _CH["app"], "app_usability", "checkout_friction")
        fb.append((att_c[give_ab], step_ts[3][give_ab] + _exp_us(rng, np.full(a, 6.0))[give_ab],
                   chk_ch[give_ab], np.full(give_ab.sum(), "checkout"),
                   np.full(give_ab.sum(), world.nps_penalty_abandoned), ab_theme[give_ab],
                   np.ones(give_ab.sum(), bool), pa_[give_ab]))

    # ---- organic journeys over the year (before and after a persona switch)
    att_c = np.concatenate([np.repeat(np.arange(n), n_att0), np.repeat(np.arange(n), n_att1)])
    lo = np.concatenate([np.repeat(active_from, n_att0), np.repeat(sw_day, n_att1)])
    hi = np.concatenate([np.repeat(sw_day, n_att0), np.repeat(np.full(n, float(_DAYS)), n_att1)])
    t0 = (start_us + (lo + rng.random(len(att_c)) * (hi - lo)) * _DAY_US).astype(np.int64)
    funnel(att_c, t0, forced=False)

    # ---- service contacts and loyalty logins unrelated to a journey
    for attr, event in (("service_contacts_per_year", "support_contact"),
                        ("logins_per_year", "loyalty_login")):
        k = rng.poisson(np.array([getattr(p, attr) for p in P])[pid] * active_days / _DAYS
                        * (frailty if event == "loyalty_login" else 1.0))
        c = np.repeat(np.arange(n), k)
        t = (start_us + (active_from[c] + rng.random(len(c)) * active_days[c]) * _DAY_US
             ).astype(np.int64)
        ch = (np.array([_CH[p.support_channel] for p in P])[pid[c]] if event == "support_contact"
              else np.where(pid[c] == _index(names, "loyal_app_regular"), _CH["app"],
                            _CH["web"]))
        ev.add(c, t, ch, event)

    # ---- experiments: assignment and planted effects
    org = pd.DataFrame({"c": np.concatenate([o[0] for o in orders]),
                        "ts": np.concatenate([o[1] for o in orders])})
    chk = pd.DataFrame(dict(zip(("c", "ts", "ch", "bought", "p"),
                                (np.concatenate(x) for x in zip(*checkouts, strict=True)),
                                strict=True)))
    win_us = world.window_days * _DAY_US

    def organic_in_window(c: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Whether customer ``c[i]`` has an organic order in ``[at[i], at[i] + window)``."""
        a = pd.DataFrame({"i": np.arange(len(c)), "c": c, "at": at}).merge(org, on="c")
        hit = a[(a.ts >= a["at"]) & (a.ts < a["at"] + win_us)].i.unique()
        out = np.zeros(len(c), bool)
        out[hit] = True
        return out

    asg: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    for e in world.experiments:
        e0, e1 = pd.Timestamp(e.start, tz="UTC").value // 1000, \
            (pd.Timestamp(e.end, tz="UTC") + pd.Timedelta(days=1)).value // 1000
        if e.trigger == "checkout":
            first = chk[(chk.ts >= e0) & (chk.ts < e1)].sort_values(["c", "ts"]) \
                .drop_duplicates("c")
            first = first[rng.random(len(first)) < e.eligibility]
            eligible = first.c.to_numpy()
            treat = rng.random(len(eligible)) < e.p_treatment
            at = first.ts.to_numpy() - first.ts.to_numpy() % 1_000_000
            bought0 = first.bought.to_numpy()
            ch = first.ch.to_numpy()
            pc = np.where(ch == _CH["app"], world.p_purchase_after_checkout_app,
                          world.p_purchase_after_checkout)
            # rescue abandoned checkouts so that completion rises by ``effect`` (relative)
            potential = ~bought0 & (rng.random(len(eligible)) < e.effect * pc / (1 - pc))
            if e.persona is not None:
                potential &= first.p.to_numpy() == _index(names, e.persona)
            responds = treat & potential
            c = eligible[responds]
            po = first.p.to_numpy()[responds]
            pts = first.ts.to_numpy()[responds] + _exp_us(
                rng, np.array([p.gap_hours[3] for p in P])[po])
            ev.add(c, pts, ch[responds], "purchase")
            fulfil(c, pts, ch[responds], po)
            # the survey after that checkout: treatment shows it on its confirmation page,
            # so treated buyers answer more often (treatment changes who responds)
            buys = bought0 | responds
            p_ans = world.p_survey_response * np.where(treat & buys, e.survey_boost, 1.0)
            ans = rng.random(len(eligible)) < p_ans
            pen = np.where(buys, 0.0, world.nps_penalty_abandoned)
            fb.append((eligible[ans], first.ts.to_numpy()[ans] + _exp_us(
                rng, np.full(ans.sum(), 2.0)), ch[ans], np.full(ans.sum(), "checkout"),
                pen[ans], np.full(ans.sum(), "checkout_friction"), ~buys[ans],
                first.p.to_numpy()[ans]))
        else:
            eligible = np.flatnonzero(rng.random(n) < e.eligibility)
            treat = rng.random(len(eligible)) < e.p_treatment
            at = (e0 + rng.random(len(eligible)) * (e1 - _DAY_US - e0)).astype(np.int64)
            at = at - at % 1_000_000
            potential = rng.random(len(eligible)) < e.effect
            if e.persona is not None:
                # a persona absent from the world (``--personas`` < 5): nobody responds
                potential &= pid[eligible] == _index(names, e.persona)
            responds = treat & potential
            if responds.any():
                c = eligible[responds]
                start = at[responds] + (rng.random(len(c)) * 10 * _DAY_US).astype(np.int64)
                funnel(c, start, forced=True)
        asg.append((e.experiment_id, eligible, treat, at))
        # the realised truth: potential outcomes of the very customers assigned
        y0 = organic_in_window(eligible, at)
        stats[f"{e.experiment_id}:assigned"] = len(eligible)
        stats[f"{e.experiment_id}:y0"] = int(y0.sum())
        stats[f"{e.experiment_id}:gain"] = int((potential & ~y0).sum())
        if e.persona is not None:
            mine = (pid[eligible] if e.trigger is None else first.p.to_numpy()) \
                == _index(names, e.persona)
            stats[f"{e.experiment_id}:assigned_persona"] = int(mine.sum())
            stats[f"{e.experiment_id}:y0_persona"] = int((y0 & mine).sum())
            stats[f"{e.experiment_id}:gain_persona"] = int((potential & ~y0 & mine).sum())

    # ---- assemble events (cut at the end of the data, sorted for determinism)
    cust = np.concatenate(ev.cust)
    ts = np.concatenate(ev.ts)
    ts = ts - ts % 1_000_000  # whole seconds: ties happen, as in real logs
    chan = np.concatenate(ev.channel)
    evt = np.concatenate(ev.event)
    keep = (ts >= start_us) & (ts < end_us)
    cust, ts, chan, evt = cust[keep], ts[keep], chan[keep], evt[keep]
    order = np.lexsort((chan, evt, ts, cust))
    cust, ts, chan, evt = cust[order], ts[order], chan[order], evt[order]
    event_names = np.array(sorted(_EVENT_ORDER, key=_EVENT_ORDER.get), dtype=object)
    ch_names = np.array(CHANNELS, dtype=object)
    events = pa.table({
        "customer_id": pa.array(ids[cust], pa.string()),
        "ts": pa.array(ts, _TS),
        "channel": pa.array(ch_names[chan], pa.string()),
        "event": pa.array(event_names[evt], pa.string()),
        "stage": pa.array(np.array([_EVENT_STAGE[e] for e in event_names], dtype=object)[evt],
                          pa.string()),
    }, schema=SCHEMAS["events"])

    # ---- orders
    oc, ots, och, oam, odi = (np.concatenate(x) for x in zip(*orders, strict=True))
    ots = ots - ots % 1_000_000
    keep = (ots >= start_us) & (ots < end_us)
    oc, ots, och, oam, odi = oc[keep], ots[keep], och[keep], oam[keep], odi[keep]
    order = np.lexsort((och, ots, oc))
    oc, ots, och, oam, odi = oc[order], ots[order], och[order], oam[order], odi[order]
    orders_t = pa.table({
        "order_id": pa.array([f"O{first_id + c:07d}-{i:04d}" for i, c in
                              enumerate(oc)], pa.string()),
        "customer_id": pa.array(ids[oc], pa.string()),
        "ts": pa.array(ots, _TS), "channel": pa.array(ch_names[och], pa.string()),
        "amount": pa.array(oam, pa.float64()), "discount": pa.array(odi, pa.float64()),
    }, schema=SCHEMAS["orders"])

    # ---- feedback with scores driven by what happened, and themed comments
    cols = [np.concatenate(x) for x in zip(*fb, strict=True)]
    cols[1] = cols[1] - cols[1] % 1_000_000
    keep = (cols[1] >= start_us) & (cols[1] < end_us)
    cols = [x[keep] for x in cols]
    order = np.lexsort((cols[3], cols[1], cols[0]))
    fc, fts, fch, fev, fpen, fth, fbad, fper = (x[order] for x in cols)
    f = len(fc)
    nps_f = np.array([p.nps_base for p in P])[fper] - fpen + rng.normal(0, 1.3, f)
    nps = np.clip(np.round(nps_f), 0, 10)
    csat = np.clip(np.round(1 + (nps_f + rng.normal(0, 1.0, f)) * 0.42), 1, 5)
    effort = np.clip(np.round(7 - (nps_f + rng.normal(0, 1.5, f)) * 0.55), 1, 7)
    sentiment = np.where(fbad | (nps < 7), "neg", "pos")
    comments = np.empty(f, dtype=object)
    has_c = rng.random(f) < world.p_comment
    pick = rng.random(f)
    pii = rng.random(f) < world.p_pii_in_comment
    pii_pick = rng.integers(0, len(_FAKE_PII), f)
    for i in np.flatnonzero(has_c):
        options = THEMES[fth[i]][sentiment[i]]
        text = options[int(pick[i] * len(options))]
        comments[i] = f"{text}. {_FAKE_PII[pii_pick[i]]}" if pii[i] else text
    null_n = rng.random(f) < 0.15
    null_c = rng.random(f) < 0.3
    null_e = rng.random(f) < 0.5
    feedback = pa.table({
        "customer_id": pa.array(ids[fc], pa.string()), "ts": pa.array(fts, _TS),
        "channel": pa.array(ch_names[fch], pa.string()), "event": pa.array(fev, pa.string()),
        "nps": pa.array(nps.astype(np.int16), pa.int16(), mask=null_n),
        "csat": pa.array(csat.astype(np.int16), pa.int16(), mask=null_c),
        "effort": pa.array(effort.astype(np.int16), pa.int16(), mask=null_e),
        "comment": pa.array(comments, pa.string()),
    }, schema=SCHEMAS["feedback"])
    themes = pa.table({
        "customer_id": pa.array(ids[fc], pa.string()), "ts": pa.array(fts, _TS),
        "event": pa.array(fev, pa.string()),
        "theme": pa.array(np.where(has_c, fth, None), pa.string()),
        "sentiment": pa.array(np.where(has_c, sentiment, None), pa.string()),
    }, schema=TRUTH_SCHEMAS["feedback_themes"])

    customers = pa.table({
        "customer_id": pa.array(ids, pa.string()),
        "signup_date": pa.array(signup_day.astype("datetime64[D]"), pa.date32()),
        **{c: pa.array(v, pa.string()) for c, v in demo.items()},
    }, schema=SCHEMAS["customers"])
    assignments = pa.table({
        "experiment_id": pa.array(np.concatenate([np.full(len(el), eid, dtype=object)
                                                  for eid, el, _, _ in asg]), pa.string()),
        "customer_id": pa.array(np.concatenate([ids[el] for _, el, _, _ in asg]), pa.string()),
        "variant": pa.array(np.concatenate([np.where(tr, "treatment", "control")
                                            for _, _, tr, _ in asg]), pa.string()),
        "assigned_at": pa.array(np.concatenate([at for _, _, _, at in asg]), _TS),
    }, schema=SCHEMAS["assignments"])
    personas = pa.table({
        "customer_id": pa.array(ids, pa.string()),
        "persona": pa.array(np.array(names, dtype=object)[pid], pa.string()),
        "persona_end": pa.array(np.array(names, dtype=object)[pid_late], pa.string()),
        "switched_at": pa.array(np.where(switch, switch_us - switch_us % 1_000_000, 0),
                                _TS, mask=~switch),
    }, schema=TRUTH_SCHEMAS["personas"])
    # calibration figures of this chunk (summed over chunks into truth.json)
    per_customer = np.bincount(oc, minlength=n)
    answered = nps[~null_n]
    stats.update({"orders": len(oc), "revenue": float(oam.sum()),
                  "buyers": int((per_customer >= 1).sum()),
                  "repeat_buyers": int((per_customer >= 2).sum()),
                  "nps_answers": len(answered), "promoters": int((answered >= 9).sum()),
                  "detractors": int((answered <= 6).sum())})
    return ({"customers": customers, "events": events, "orders": orders_t, "feedback": feedback,
             "assignments": assignments},
            {"personas": personas, "feedback_themes": themes}, stats)


# --------------------------------------------------------------------------- truth


def expected_conversion(world: World = WORLD) -> dict[str, dict[str, float]]:
    """Expected 14-day conversion per persona without any experiment, in closed form.

    Purchases of a customer form a Poisson process with rate ``lambda_p * g`` per day, where
    ``lambda_p`` = attempts/365 x P(visit..checkout) x P(purchase | checkout channel) and
    ``g ~ Gamma(k, 1/k)``, so ``P(no purchase in w days) = (1 + w lambda_p / k)^-k``.
    """
    out = {}
    k, w = world.frailty_shape, world.window_days
    for name, p in world.personas.items():
        buy = np.array(p.buy_channels)
        p_after = np.where(np.array(CHANNELS) == "app", world.p_purchase_after_checkout_app,
                           world.p_purchase_after_checkout)
        conv = float(np.prod(p.p_step) * (buy * p_after).sum())
        lam = p.attempts_per_year / _DAYS * conv
        p_none = (1 + w * lam / k) ** (-k)
        out[name] = {"purchases_per_day": lam, "p_convert_window": 1 - p_none,
                     "attempt_conversion": conv}
    return out


def experiment_truth(world: World = WORLD, stats: Mapping[str, float] | None = None
                     ) -> dict[str, dict]:
    """Planted effects with their absolute lift on 14-day conversion.

    With ``stats`` (the generator's counts) the lift is the *realised* one: the share of the
    assigned customers whose 14-day conversion the treatment changes (a planted purchase of a
    customer without an organic order in their window), i.e. the average treatment effect
    in the very customers of the test, which an unbiased estimate targets. Without ``stats``
    it is a closed-form approximation: for a planted extra journey ``effect x P(no organic
    purchase in the window)``; for a triggered test ``effect x`` the checkout completion.
    Both ignore extra orders planted by overlapping experiments (equal in both arms).
    """
    base = expected_conversion(world)
    weights = {n: p.weight for n, p in world.personas.items()}
    total = sum(weights.values())
    p_chk = (world.p_purchase_after_checkout_app + world.p_purchase_after_checkout) / 2
    out = {}
    for e in world.experiments:
        by_persona = {}
        for name in world.personas:
            affected = e.persona in (None, name)
            if e.trigger == "checkout":
                by_persona[name] = e.effect * p_chk if affected else 0.0
            else:
                by_persona[name] = (e.effect * (1 - base[name]["p_convert_window"])
                                    if affected else 0.0)
        control = sum(weights[n] / total * base[n]["p_convert_window"] for n in weights)
        lift = sum(weights[n] / total * by_persona[n] for n in weights)
        key = e.experiment_id
        realised = None
        if stats and stats.get(f"{key}:assigned"):
            n_a = stats[f"{key}:assigned"]
            control = stats[f"{key}:y0"] / n_a
            lift = stats[f"{key}:gain"] / n_a
            realised = {"assigned": int(n_a), "control_conversion": control,
                        "abs_lift": lift, "rel_lift": lift / control if control else None}
            if e.persona is not None and stats.get(f"{key}:assigned_persona"):
                n_p = stats[f"{key}:assigned_persona"]
                by_persona[e.persona] = stats[f"{key}:gain_persona"] / n_p
                realised["persona_control_conversion"] = stats[f"{key}:y0_persona"] / n_p
        out[key] = {
            **asdict(e),
            "planned_split": {"control": 0.5, "treatment": 0.5},
            "delivered_split": {"control": 1 - e.p_treatment, "treatment": e.p_treatment},
            "srm": e.p_treatment != 0.5,
            "expected_control_conversion": control,
            "expected_abs_lift": lift,
            "expected_rel_lift": lift / control if control else None,
            "expected_abs_lift_by_persona": by_persona,
            "realised": realised,
            "survey_response_changed": e.survey_boost != 1.0,
            "metric": f"any order within {world.window_days} days after assigned_at",
        }
    return out


def calibration(stats: Mapping[str, float]) -> dict[str, float | None]:
    """The world's headline figures from the generator's counts (see the module docstring
    for the published ranges they are calibrated to)."""
    def ratio(a: str, b: str) -> float | None:
        return stats[a] / stats[b] if stats.get(b) else None

    nps = (100 * (stats["promoters"] - stats["detractors"]) / stats["nps_answers"]
           if stats.get("nps_answers") else None)
    return {"attempt_conversion_7d": ratio("attempts_converted_7d", "attempts"),
            "orders_per_customer": ratio("orders", "customers"),
            "aov": ratio("revenue", "orders"),
            "buyer_share": ratio("buyers", "customers"),
            "repeat_rate": ratio("repeat_buyers", "buyers"),
            "nps": nps}


def truth_dict(world: World = WORLD, n_customers: int | None = None, seed: int | None = None,
               stats: Mapping[str, float] | None = None) -> dict:
    """Everything that defines the world, as plain JSON (with ``stats``, the generator's
    counts, also the realised calibration figures and experiment lifts)."""
    return {
        "n_customers": n_customers,
        "seed": seed,
        "data_span": [START.isoformat(), (END - pd.Timedelta(seconds=1)).isoformat()],
        "calibration_window": ["2025-01-01", "2025-09-30"],
        "holdout_window": ["2025-10-01", "2025-12-31"],
        "channels": list(CHANNELS),
        "funnel": list(FUNNEL),
        "event_stage": _EVENT_STAGE,
        "personas": {n: asdict(p) for n, p in world.personas.items()},
        "persona_channels": {n: {"browse": dict(zip(CHANNELS, p.browse_channels, strict=True)),
                                 "buy": dict(zip(CHANNELS, p.buy_channels, strict=True))}
                             for n, p in world.personas.items()},
        "expected_conversion": expected_conversion(world),
        "pain_points": [
            {"kind": "funnel_step", "step": "checkout", "next_step": "purchase",
             "channel": "app", "rate": world.p_purchase_after_checkout_app,
             "rate_elsewhere": world.p_purchase_after_checkout,
             "description": "checkout in the app completes far less often"},
            {"kind": "late_delivery", "rate": world.p_late_delivery,
             "p_support_if_late": world.p_support_if_late,
             "nps_penalty": world.nps_penalty_late,
             "description": "late deliveries drive support contacts and low NPS"},
        ],
        "channel_roles": {
            "introducers": ["social", "email"],
            "closers": ["web", "app", "store"],
            "description": "awareness touches come from social and email; purchases close on "
                           "web, app and store (store and call_centre for assisted shoppers)",
        },
        # a step x channel cell that looks worse only because of who uses the channel: step
        # rates depend on the persona alone (except app checkout), and store visits are
        # mostly assisted shoppers', who look without viewing a product online most often
        # and come least often. Adjusted for persona: no pain point.
        "confounded_channels": [
            {"step": "visit", "next_step": "product_view", "channel": "store",
             "by": "persona", "true_channel_effect": 0.0,
             "description": "store visits are mostly assisted shoppers', who drop off after "
                            "the visit most; within personas the store is no worse"}],
        # awareness touches precede journeys that would happen anyway: removing them changes
        # no journey and no conversion (what path-based attribution credits them is not this)
        "channel_effects": {
            "email": {"incremental_conversions": 0.0, "inert": True,
                      "description": "email opens precede journeys that happen anyway"},
            "social": {"incremental_conversions": 0.0, "inert": True,
                       "description": "social clicks precede journeys that happen anyway"},
        },
        "inert_channel": "email",
        "demographic_effects": {
            "basket_by_income": dict(zip(_DEMOGRAPHICS["income_band"], world.basket_by_income,
                                         strict=True)),
            "description": "order value x0.92 (low income), x1.12 (high income) within "
                           "persona; demographics tilt personas only weakly"},
        "drift": {"p_persona_switch": world.p_persona_switch,
                  "channel_concentration": world.channel_concentration,
                  "description": "customers switch to another persona at a uniform time of "
                                 "2025 (truth/personas.parquet: persona_end, switched_at); "
                                 "per-customer channel mixes overlap between personas"},
        "calibration": calibration(stats) if stats else None,
        "themes": {t: {s: list(v) for s, v in d.items()} for t, d in THEMES.items()},
        "experiments": experiment_truth(world, stats),
        "world": {k: v for k, v in asdict(world).items() if k not in ("personas", "experiments")},
    }


# --------------------------------------------------------------------------- truth appendices


def read_truth(truth_dir: str | os.PathLike[str]) -> dict:
    """``truth.json`` of a synthetic world's ``truth/`` folder."""
    return json.loads((Path(truth_dir) / "truth.json").read_text())


def confounded_flags(truth: Mapping[str, Any], **adjusted: pd.DataFrame | None) -> pd.DataFrame:
    """Whether each planted confounded cell is flagged, per adjustment.

    Parameters
    ----------
    truth : dict
        ``truth.json`` (its ``confounded_channels``).
    **adjusted : DataFrame or None
        Named tables of :func:`cxanalysis.painpoints.adjusted_dropoff` (``.table()``), e.g.
        ``estimated_personas=...``, ``true_personas=...``; None is skipped.

    Returns
    -------
    DataFrame
        One row per planted cell: ``step``, ``next_step``, ``channel``, then per table
        ``<name>_raw`` (flagged before adjusting) and ``<name>_adjusted`` (flagged within
        personas; should be False). Missing cells (too small to test) are NA.
    """
    rows = []
    for c in truth.get("confounded_channels", []):
        row: dict[str, Any] = {"step": c["step"], "next_step": c["next_step"],
                               "channel": c["channel"]}
        for name, table in adjusted.items():
            if table is None:
                continue
            t = table.set_index(["event", "next_event", "channel"])
            key = (c["step"], c["next_step"], c["channel"])
            hit = t.loc[key] if key in t.index else None
            row[f"{name}_raw"] = bool(hit["worse"]) if hit is not None else pd.NA
            row[f"{name}_adjusted"] = bool(hit["worse_adjusted"]) if hit is not None else pd.NA
        rows.append(row)
    return pd.DataFrame(rows)


def credit_vs_incrementality(truth: Mapping[str, Any], credit: pd.DataFrame) -> pd.DataFrame:
    """Each channel's true incremental effect (from ``channel_effects``: 0 for an inert
    channel; NaN where the world plants none) beside the share of conversions each
    attribution model credits it with (``credit``: channels as index, one column per model,
    shares of conversions)."""
    effects = truth.get("channel_effects", {})
    out = credit.copy()
    out.insert(0, "true_incremental", [effects.get(c, {}).get("incremental_conversions",
                                                            np.nan) for c in out.index])
    out.insert(0, "inert", [bool(effects.get(c, {}).get("inert", False)) for c in out.index])
    return out


def experiment_vs_truth(truth: Mapping[str, Any], experiment_id: str, effects: pd.DataFrame,
                        srm_flagged: bool) -> pd.DataFrame | None:
    """The planted truth of an experiment beside its estimates: the realised lift of
    14-day conversion (absolute and relative) against the estimated difference and its
    interval, whether the interval covers it, and whether the survey response rate was
    changed by treatment against its estimate. None when the experiment was not planted.

    ``effects`` is the effects table of :func:`cxanalysis.experiments.analyze` (columns
    ``metric``, ``abs_diff``, ``abs_ci_low``, ``abs_ci_high``, ``p_value``)."""
    planted = truth.get("experiments", {}).get(experiment_id)
    if not planted:
        return None
    rows = []
    e = effects.drop_duplicates("metric").set_index("metric")
    want = {"conversion": planted["expected_abs_lift"],
            "response_rate": None if not planted.get("survey_response_changed") else np.nan}
    for metric, lift in want.items():
        if metric not in e.index:
            continue
        r = e.loc[metric]
        rows.append({
            "metric": metric,
            "planted": ("no change" if lift is None else "changed (higher in treatment)"
                        if np.isnan(lift) else f"{lift:+.4f}"),
            "planted_rel": (planted.get("expected_rel_lift") if metric == "conversion"
                            else np.nan),
            "estimate": r["abs_diff"], "ci_low": r["abs_ci_low"], "ci_high": r["abs_ci_high"],
            "p_value": r["p_value"],
            "covered": (bool(r["abs_ci_low"] <= lift <= r["abs_ci_high"])
                        if lift is not None and not np.isnan(lift) else pd.NA),
        })
    rows.append({"metric": "sample ratio mismatch", "planted": str(bool(planted["srm"])),
                 "estimate": np.nan, "covered": bool(planted["srm"]) == bool(srm_flagged),
                 "p_value": np.nan, "planted_rel": np.nan, "ci_low": np.nan, "ci_high": np.nan})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- writer


def _atomic_writer(path: Path, schema: pa.Schema) -> tuple[pq.ParquetWriter, Path]:
    tmp = path.with_suffix(path.suffix + ".tmp")
    return pq.ParquetWriter(tmp, schema, compression="zstd"), tmp


def generate(n_customers: int, seed: int, out: str | os.PathLike[str], chunk_size: int = 50_000,
             progress: bool = False, world: World = WORLD) -> Path:
    """Write the synthetic world to ``out`` and return the folder.

    Parameters
    ----------
    n_customers : int
        Number of customers (>= 1).
    seed : int
        Random seed; same seed and chunk size give byte-identical files.
    out : path-like
        Output folder (created); tables as ``NAME.parquet``, ground truth in ``truth/``.
    chunk_size : int
        Customers generated and written at a time; bounds memory.
    progress : bool
        Show a progress bar (tqdm).
    world : World
        The parameters of the world (default :data:`WORLD`).
    """
    if n_customers < 1:
        raise ValueError("n_customers must be at least 1")
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    writers = {name: _atomic_writer(out / f"{name}.parquet", s) for name, s in SCHEMAS.items()}
    twriters = {name: _atomic_writer(out / "truth" / f"{name}.parquet", s)
                for name, s in TRUTH_SCHEMAS.items()}
    starts = range(0, n_customers, chunk_size)
    stats: dict[str, float] = {}
    # the package's one bar: stderr, and off under CX_PROGRESS=0 even when asked for
    bar = progress_bar(total=n_customers, unit="customers", desc="synth", enable=progress)
    try:
        for chunk, first in enumerate(starts):
            n = min(chunk_size, n_customers - first)
            rng = np.random.default_rng([seed, chunk])
            tables, truth, chunk_stats = _chunk(rng, first, n, world)
            for key, v in chunk_stats.items():
                stats[key] = stats.get(key, 0) + v
            for name, table in tables.items():
                writers[name][0].write_table(table)
            for name, table in truth.items():
                twriters[name][0].write_table(table)
            bar.update(n)
    finally:
        for w, _ in [*writers.values(), *twriters.values()]:
            w.close()
        bar.close()
    for name, (_, tmp) in writers.items():
        os.replace(tmp, out / f"{name}.parquet")
    for name, (_, tmp) in twriters.items():
        os.replace(tmp, out / "truth" / f"{name}.parquet")
    experiments = pa.table({
        "experiment_id": [e.experiment_id for e in world.experiments],
        "name": [e.name for e in world.experiments],
        "hypothesis": [e.hypothesis for e in world.experiments],
        "control": ["control"] * len(world.experiments),
        "start": pa.array([pd.Timestamp(e.start, tz="UTC") for e in world.experiments], _TS),
        "end": pa.array([pd.Timestamp(e.end, tz="UTC") + pd.Timedelta(days=1)
                         - pd.Timedelta(seconds=1) for e in world.experiments], _TS),
        "planned_split": ["control:0.5,treatment:0.5"] * len(world.experiments),
    })
    pq.write_table(experiments, out / "experiments.parquet", compression="zstd")
    (out / "truth" / "truth.json").write_text(
        json.dumps(truth_dict(world, n_customers, seed, stats), indent=2, sort_keys=False) + "\n")
    return out
