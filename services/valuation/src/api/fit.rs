//! FitModel and ActivateModel: the validated plan of a fit, the data it
//! takes, and the events a fitted or activated model publishes.

use chrono::{Datelike, NaiveDate};

use rapport_kit::calendar::{Tz, start_of_day, starts_period};
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::interaction::v1::{OpportunityHistory, SummaryColumns};

use super::*;
use crate::domain::discrete::Opportunities;
use crate::domain::holdout::Validation;
use crate::domain::kept as domain_kept;
use crate::kept;

/// A validated FitModel request.
pub(super) struct FitPlan {
    pub(super) kind: Kind,
    pub(super) unit: Unit,
    pub(super) calibration_end: DateTime<Utc>,
    pub(super) holdout_end: Option<DateTime<Utc>>,
    pub(super) segment: Option<Uuid>,
    pub(super) cohort: Option<(String, DateTime<Utc>, DateTime<Utc>)>,
    pub(super) max_iterations: u64,
    pub(super) activate: bool,
    /// The window's last days when it was asked for by date: ages then count
    /// to the calibration day, not to the instant after it.
    pub(super) dates: Option<(NaiveDate, Option<NaiveDate>)>,
    /// The time zone of the dates and purchase days.
    pub(super) zone: Tz,
}

/// A "YYYY-MM-DD" day into `v`; the start of the day after it in `zone`.
fn end_of_day(
    v: &mut Violations,
    field: &str,
    raw: &str,
    zone: Tz,
) -> Option<(NaiveDate, DateTime<Utc>)> {
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .filter(|d| raw.len() == 10 && d.year() >= 1);
    let Some(day) = day else {
        v.add(field, "must be a date \"YYYY-MM-DD\"");
        return None;
    };
    // The end is a protobuf Timestamp: at most the start of 9999-12-31.
    match day.succ_opt().filter(|next| next.year() <= 9999) {
        Some(next) => Some((day, start_of_day(next, zone))),
        None => {
            v.add(field, "is out of range");
            None
        }
    }
}

/// Validates a FitModel request whose days are in `zone` (the request's
/// `time_zone`, or the tenant's when it names none).
pub(super) fn validate_fit(
    r: &pb::FitModelRequest,
    now: DateTime<Utc>,
    zone: &str,
) -> Result<FitPlan, ApiError> {
    let mut v = Violations::new();
    let plan = check_fit(&mut v, r, now, zone);
    v.finish()?;
    plan.ok_or_else(|| ApiError::invalid("kind", "required"))
}

/// Checks a FitModel request into `v`, its days in `zone`; the plan when
/// kind, unit and calibration end are usable (the caller refuses the
/// request if `v` holds anything).
pub(super) fn check_fit(
    v: &mut Violations,
    r: &pb::FitModelRequest,
    now: DateTime<Utc>,
    zone: &str,
) -> Option<FitPlan> {
    let inline = !r.inline_summaries.is_empty();
    let kind = Kind::from_proto(r.kind);
    v.check(
        kind.is_none(),
        "kind",
        "required: BG_NBD, PARETO_NBD, MBG_NBD, GAMMA_GAMMA, BG_BB or SBG",
    );
    let zone = v.time_zone("time_zone", zone);
    let by_date = !r.calibration_end_date.is_empty();
    let calibration_day = by_date
        .then(|| end_of_day(v, "calibration_end_date", &r.calibration_end_date, zone))
        .flatten();
    let holdout_day = (!r.holdout_end_date.is_empty())
        .then(|| end_of_day(v, "holdout_end_date", &r.holdout_end_date, zone))
        .flatten();
    v.check(
        by_date && r.calibration_end_time.is_some(),
        "calibration_end_date",
        "give calibration_end_date or calibration_end_time, not both",
    );
    v.check(
        !r.holdout_end_date.is_empty() && r.holdout_end_time.is_some(),
        "holdout_end_date",
        "give holdout_end_date or holdout_end_time, not both",
    );
    v.check(
        !r.holdout_end_date.is_empty() && !by_date,
        "holdout_end_date",
        "needs calibration_end_date",
    );
    v.check(
        !inline && calibration_day.is_some_and(|(_, end)| end > now),
        "calibration_end_date",
        "must be a day that has ended, for exported data",
    );
    v.check(
        !inline && holdout_day.is_some_and(|(_, end)| end > now),
        "holdout_end_date",
        "must be a day that has ended, for exported data",
    );
    v.check(
        matches!((calibration_day, holdout_day), (Some((c, _)), Some((h, _))) if h <= c),
        "holdout_end_date",
        "must be after calibration_end_date",
    );
    let calibration_end = match &r.calibration_end_time {
        None if by_date => calibration_day.map(|(_, end)| end),
        None => {
            v.add("calibration_end_time", "required (or calibration_end_date)");
            None
        }
        Some(t) => match from_timestamp(t) {
            None => {
                v.add("calibration_end_time", "is not a valid timestamp");
                None
            }
            Some(t) if !inline && t > now => {
                v.add(
                    "calibration_end_time",
                    "must not be after the server's clock for exported data",
                );
                None
            }
            Some(t) => Some(t),
        },
    };
    let unit = Unit::from_proto(r.period_unit);
    v.check(
        unit.is_none(),
        "period_unit",
        "required: DAY, WEEK, MONTH or YEAR",
    );
    // The discrete models count whole calendar periods: the windows must
    // end where one starts.
    if let (Some(k), Ok(u)) = (
        kind.filter(|k| k.discrete()),
        PeriodUnit::try_from(r.period_unit),
    ) && u != PeriodUnit::Unspecified
    {
        let what = format!(
            "must be the start of a calendar {} for {}: opportunities are whole calendar periods (for years, e.g. the date \"2001-12-31\")",
            period_name(u),
            k.display()
        );
        let (c_field, h_field) = if by_date {
            ("calibration_end_date", "holdout_end_date")
        } else {
            ("calibration_end_time", "holdout_end_time")
        };
        v.check(
            calibration_end.is_some_and(|c| !starts_period(u, c, zone)),
            c_field,
            what.clone(),
        );
        let holdout = match &r.holdout_end_time {
            Some(t) => from_timestamp(t),
            None => holdout_day.map(|(_, end)| end),
        };
        v.check(
            holdout.is_some_and(|h| !starts_period(u, h, zone)),
            if r.holdout_end_time.is_some() {
                "holdout_end_time"
            } else {
                h_field
            },
            what,
        );
    }
    let holdout_end = match &r.holdout_end_time {
        None => holdout_day.map(|(_, end)| end),
        Some(t) => match from_timestamp(t) {
            None => {
                v.add("holdout_end_time", "is not a valid timestamp");
                None
            }
            Some(h) if calibration_end.is_some_and(|c| h <= c) => {
                v.add("holdout_end_time", "must be after calibration_end_time");
                None
            }
            Some(h) if !inline && h > now => {
                v.add(
                    "holdout_end_time",
                    "must not be after the server's clock for exported data",
                );
                None
            }
            Some(h) => Some(h),
        },
    };
    let (mut segment, mut cohort) = (None, None);
    match r.scope.as_ref().and_then(|s| s.restriction.as_ref()) {
        None => {}
        Some(_) if inline => v.add("scope", "must be unset with inline_summaries"),
        Some(model_scope::Restriction::SegmentId(s)) => segment = v.uuid("scope.segment_id", s),
        Some(model_scope::Restriction::Cohort(c)) => match cohort::parse_label(c) {
            None => v.add(
                "scope.cohort",
                "must be a month \"YYYY-MM\" or a quarter \"YYYY-Qn\"",
            ),
            Some((g, p)) => match (cohort::period_start(p, g), cohort::period_start(p + 1, g)) {
                (Some(start), Some(end)) => {
                    if calibration_end.is_some_and(|c| start >= c) {
                        v.add("scope.cohort", "must start before calibration_end_time");
                    }
                    cohort = Some((c.clone(), start, end));
                }
                _ => v.add("scope.cohort", "is out of range"),
            },
        },
    }
    v.check(
        r.inline_summaries.len() > MAX_INLINE,
        "inline_summaries",
        format!("at most {MAX_INLINE} summaries"),
    );
    let mut currencies = HashSet::new();
    for (i, s) in r.inline_summaries.iter().enumerate().take(MAX_INLINE + 1) {
        let f = |name: &str| format!("inline_summaries[{i}].{name}");
        v.uuid(f("customer_id"), &s.customer_id);
        v.check(s.frequency < 0, f("frequency"), "must not be negative");
        v.check(
            !(s.recency >= 0.0 && s.recency.is_finite()),
            f("recency"),
            "must be finite and not negative",
        );
        v.check(
            !(s.t >= 0.0 && s.t.is_finite()),
            f("t"),
            "must be finite and not negative",
        );
        v.check(s.recency > s.t, f("recency"), "must not exceed t");
        v.check(
            s.frequency == 0 && s.recency > 0.0,
            f("recency"),
            "must be 0 when frequency is 0",
        );
        v.check(
            !(s.monetary_value >= 0.0 && s.monetary_value.is_finite()),
            f("monetary_value"),
            "must be finite and not negative",
        );
        v.check(
            holdout_end.is_none()
                && r.holdout_end_time.is_none()
                && (s.holdout_purchases != 0 || s.holdout_value != 0.0),
            f("holdout_purchases"),
            "holdout figures need holdout_end_time",
        );
        v.check(
            s.holdout_purchases < 0,
            f("holdout_purchases"),
            "must not be negative",
        );
        if kind.is_some_and(Kind::discrete) {
            let holdout = holdout_day.is_some() || r.holdout_end_time.is_some();
            check_opportunities(v, &f("opportunities"), s.opportunities.as_ref(), holdout);
        }
        if let Some(t) = &s.first_purchase_time {
            v.check(
                from_timestamp(t).is_none(),
                f("first_purchase_time"),
                "is not a valid timestamp",
            );
        }
        if !s.currency_code.is_empty() {
            if is_currency(&s.currency_code) {
                currencies.insert(s.currency_code.as_str());
            } else {
                v.add(
                    f("currency_code"),
                    "must be an ISO 4217 currency code in upper case",
                );
            }
        }
    }
    v.check(
        !r.currency_code.is_empty() && !is_currency(&r.currency_code),
        "currency_code",
        "must be an ISO 4217 currency code in upper case",
    );
    v.check(
        inline && r.currency_code.is_empty() && currencies.len() > 1,
        "currency_code",
        "required: the inline summaries are in several currencies",
    );
    v.check(
        inline
            && kind == Some(Kind::GammaGamma)
            && r.currency_code.is_empty()
            && currencies.is_empty(),
        "currency_code",
        "required: the inline summaries name no currency",
    );
    let options = r.options.unwrap_or_default();
    v.check(
        !(0..=100_000).contains(&options.max_iterations),
        "options.max_iterations",
        "must be in 0..=100000 (0 means 1000)",
    );
    check_request_id(v, &r.request_id);
    let (Some(kind), Some(unit), Some(calibration_end)) = (kind, unit, calibration_end) else {
        return None;
    };
    Some(FitPlan {
        kind,
        unit,
        calibration_end,
        holdout_end,
        segment,
        cohort,
        max_iterations: if options.max_iterations == 0 {
            1000
        } else {
            options.max_iterations as u64
        },
        activate: options.activate_on_success,
        dates: calibration_day.map(|(c, _)| (c, holdout_day.map(|(h, _)| h))),
        zone,
    })
}

/// "day", "week", ... for messages.
fn period_name(u: PeriodUnit) -> &'static str {
    match u {
        PeriodUnit::Day | PeriodUnit::Unspecified => "day",
        PeriodUnit::Week => "week (a Monday)",
        PeriodUnit::Month => "month",
        PeriodUnit::Year => "year",
    }
}

/// Checks an inline summary's opportunities into `v` (field `at`).
fn check_opportunities(
    v: &mut Violations,
    at: &str,
    o: Option<&OpportunityHistory>,
    holdout: bool,
) {
    let Some(o) = o else {
        v.add(at, "required for BG_BB and SBG");
        return;
    };
    let f = |name: &str| format!("{at}.{name}");
    let max = Opportunities::MAX;
    v.check(
        !(0..=max).contains(&o.opportunities),
        f("opportunities"),
        format!("must be in 0..={max}"),
    );
    v.check(
        !(0..=o.opportunities.max(0)).contains(&o.frequency),
        f("frequency"),
        "must be in 0..=opportunities",
    );
    let recency_ok = if o.frequency == 0 {
        o.recency == 0
    } else {
        (o.frequency..=o.opportunities).contains(&o.recency)
    };
    v.check(
        !recency_ok,
        f("recency"),
        "must be in frequency..=opportunities (0 when frequency is 0)",
    );
    v.check(
        !(0..=o.frequency.max(0)).contains(&o.renewals),
        f("renewals"),
        "must be in 0..=frequency",
    );
    v.check(
        !(0..=max).contains(&o.holdout_opportunities),
        f("holdout_opportunities"),
        format!("must be in 0..={max}"),
    );
    v.check(
        !holdout && (o.holdout_opportunities != 0 || o.holdout_frequency != 0),
        f("holdout_opportunities"),
        "holdout figures need a holdout end",
    );
    v.check(
        !(0..=o.holdout_opportunities.max(0)).contains(&o.holdout_frequency),
        f("holdout_frequency"),
        "must be in 0..=holdout_opportunities",
    );
}

/// What a fit takes: one case per customer, the currency of their monetary
/// values, and the earliest first purchase among them.
pub(super) struct FitData {
    pub(super) cases: Vec<FitCase>,
    pub(super) currency: String,
    pub(super) earliest: Option<DateTime<Utc>>,
}

impl FitData {
    /// From inline summaries; the currency is the request's, or else the
    /// summaries' common one.
    fn inline(summaries: &[PurchaseHistorySummary], currency: &str) -> Self {
        let currency = if currency.is_empty() {
            summaries
                .iter()
                .map(|s| s.currency_code.as_str())
                .find(|c| !c.is_empty())
                .unwrap_or_default()
        } else {
            currency
        };
        FitData {
            cases: fit_cases(summaries, currency),
            currency: currency.to_string(),
            earliest: summaries
                .iter()
                .filter_map(|s| s.first_purchase_time.as_ref().and_then(from_timestamp))
                .min(),
        }
    }

    /// Appends an export's columns, skipping the customers in `seen` when
    /// given (a merged segment member exports as its survivor, which may
    /// already have come).
    fn extend(&mut self, c: &SummaryColumns, mut seen: Option<&mut HashSet<Uuid>>) {
        if self.currency.is_empty() {
            self.currency = c.currency_code.clone();
        }
        self.cases.reserve(c.frequency.len());
        let with_opportunities = c.opportunities.len() == c.frequency.len();
        for (i, id) in c.customer_ids.chunks_exact(16).enumerate() {
            let (Ok(id), Some(&frequency)) = (Uuid::from_slice(id), c.frequency.get(i)) else {
                continue;
            };
            if seen.as_mut().is_some_and(|seen| !seen.insert(id)) {
                continue;
            }
            let at = |col: &[i64]| col.get(i).copied().unwrap_or(0);
            let opportunities = with_opportunities
                .then(|| {
                    Opportunities::new(
                        at(&c.opportunities),
                        at(&c.opportunity_frequency),
                        at(&c.opportunity_recency),
                        at(&c.renewals),
                    )
                })
                .flatten();
            let first = c
                .first_purchase_micros
                .get(i)
                .and_then(|m| DateTime::from_timestamp_micros(*m));
            if let Some(f) = first {
                self.earliest = Some(self.earliest.map_or(f, |e| e.min(f)));
            }
            self.cases.push(FitCase {
                frequency,
                recency: c.recency.get(i).copied().unwrap_or(0.0),
                t: c.t.get(i).copied().unwrap_or(0.0),
                monetary_value: c.monetary_value.get(i).copied().unwrap_or(0.0),
                in_currency: true,
                holdout_purchases: at(&c.holdout_purchases),
                opportunities,
                holdout_opportunities: (
                    at(&c.holdout_opportunities).clamp(0, Opportunities::MAX) as u32,
                    at(&c.holdout_opportunity_frequency),
                ),
            });
        }
    }
}

/// The fit's view of the summaries; those in `currency` are Gamma-Gamma's.
pub(super) fn fit_cases(summaries: &[PurchaseHistorySummary], currency: &str) -> Vec<FitCase> {
    summaries
        .iter()
        .map(|s| FitCase {
            frequency: s.frequency,
            recency: s.recency,
            t: s.t,
            monetary_value: s.monetary_value,
            in_currency: s.currency_code == currency,
            holdout_purchases: s.holdout_purchases,
            opportunities: crate::engine::opportunities(s),
            holdout_opportunities: s.opportunities.as_ref().map_or((0, 0), |o| {
                (
                    o.holdout_opportunities.clamp(0, Opportunities::MAX) as u32,
                    o.holdout_frequency,
                )
            }),
        })
        .collect()
}

/// The holdout window's length in the plan's periods.
pub(super) fn holdout_periods(plan: &FitPlan) -> Option<f64> {
    plan.holdout_end.map(|h| {
        (h - plan.calibration_end).num_milliseconds() as f64 / 86_400_000.0 / plan.unit.days()
    })
}

/// The window of the data a fit took.
pub(super) fn data_window(plan: &FitPlan, earliest: Option<DateTime<Utc>>) -> pb::DataWindow {
    let day = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    pb::DataWindow {
        period_unit: plan.unit.to_proto(),
        earliest_first_purchase_time: earliest.map(timestamp),
        calibration_end_time: Some(timestamp(plan.calibration_end)),
        holdout_end_time: plan.holdout_end.map(timestamp),
        holdout_periods: holdout_periods(plan).unwrap_or(0.0),
        calibration_end_date: plan.dates.map(|(c, _)| day(c)).unwrap_or_default(),
        holdout_end_date: plan.dates.and_then(|(_, h)| h).map(day).unwrap_or_default(),
        time_zone: plan.zone.name().to_string(),
    }
}

/// A fit's estimates with their standard errors.
pub(super) fn parameters(outcome: &fitting::Outcome) -> Vec<pb::ModelParameter> {
    outcome
        .parameters
        .iter()
        .map(|(n, v, se)| pb::ModelParameter {
            name: (*n).to_string(),
            value: *v,
            standard_error: se.map(|s| s.abs()),
        })
        .collect()
}

/// A calibration/holdout validation in the contract's terms.
pub(super) fn validation(v: &Validation) -> pb::HoldoutValidation {
    pb::HoldoutValidation {
        rows: v
            .buckets
            .iter()
            .map(|b| pb::CalibrationHoldoutRow {
                min_frequency: b.min_frequency,
                max_frequency: b.max_frequency,
                customer_count: b.customers,
                actual_mean_holdout_purchases: b.actual_mean,
                predicted_mean_holdout_purchases: b.predicted_mean,
            })
            .collect(),
        actual_total_purchases: v.actual_total,
        predicted_total_purchases: v.predicted_total,
        total_purchases_error_percent: v.total_error_percent,
        mean_absolute_error: v.mean_absolute_error,
        root_mean_squared_error: v.root_mean_squared_error,
        bucket_mean_absolute_error: v.bucket_mean_absolute_error,
    }
}

/// For a window asked for by date, ages count to the last calibration day
/// rather than to the instant after it: one day less than the export's,
/// never below the recency (which is counted in whole days already).
fn count_ages_to_the_day(plan: &FitPlan, cases: &mut [FitCase]) {
    if plan.dates.is_none() {
        return;
    }
    let day = 1.0 / plan.unit.days();
    for c in cases {
        c.t = (c.t - day).max(c.recency).max(0.0);
    }
}

pub(super) fn request_hash(r: &pb::FitModelRequest) -> String {
    hex::encode(Sha256::digest(r.encode_to_vec()))
}

impl ValuationApi {
    /// Reads the summaries a fit takes: inline, or exported (as columns) for
    /// the scope.
    pub(super) async fn fit_data(
        &self,
        ctx: &CallContext,
        r: &pb::FitModelRequest,
        plan: &FitPlan,
    ) -> Result<FitData, ApiError> {
        if !r.inline_summaries.is_empty() {
            return Ok(FitData::inline(&r.inline_summaries, &r.currency_code));
        }
        if let Some(mut data) = self.kept_fit_data(ctx, r, plan).await? {
            count_ages_to_the_day(plan, &mut data.cases);
            return Ok(data);
        }
        let interaction = self.interaction()?;
        let base = ExportSummariesRequest {
            calibration_end_time: Some(timestamp(plan.calibration_end)),
            period_unit: plan.unit.to_proto(),
            holdout_end_time: plan.holdout_end.map(timestamp),
            currency_code: r.currency_code.clone(),
            with_opportunities: plan.kind.discrete(),
            columnar: true,
            time_zone: plan.zone.name().to_string(),
            restriction: plan.cohort.as_ref().map(|(_, start, end)| {
                export_summaries_request::Restriction::Cohort(AcquisitionCohort {
                    start_time: Some(timestamp(*start)),
                    end_time: Some(timestamp(*end)),
                })
            }),
        };
        let mut data = FitData {
            cases: Vec::new(),
            currency: r.currency_code.clone(),
            earliest: None,
        };
        // Only a segment's exports can name one customer twice.
        let mut seen = plan.segment.map(|_| HashSet::new());
        let requests = match plan.segment {
            None => vec![base],
            Some(segment) => {
                let segmentation = self
                    .segmentation
                    .as_ref()
                    .ok_or_else(|| not_configured("segmentation"))?;
                let mut members = segmentation.members(ctx, segment).await?;
                members.sort_unstable();
                members.dedup();
                members
                    .chunks(EXPORT_IDS)
                    .map(|chunk| ExportSummariesRequest {
                        restriction: Some(export_summaries_request::Restriction::CustomerIds(
                            CustomerIdList {
                                customer_ids: chunk.iter().map(Uuid::to_string).collect(),
                            },
                        )),
                        ..base.clone()
                    })
                    .collect()
            }
        };
        for req in requests {
            interaction
                .export_columns(ctx, req, |columns| data.extend(columns, seen.as_mut()))
                .await?;
        }
        count_ages_to_the_day(plan, &mut data.cases);
        Ok(data)
    }
}

impl ValuationApi {
    /// The fit's data from the purchase summaries kept from the interaction
    /// feed, when they hold exactly what the export would (see
    /// [`crate::kept`]): a fit of the whole tenant (or a cohort) by BG/NBD,
    /// MBG/NBD, Pareto/NBD or Gamma-Gamma, in UTC, without a holdout. None
    /// otherwise: the caller exports.
    async fn kept_fit_data(
        &self,
        ctx: &CallContext,
        r: &pb::FitModelRequest,
        plan: &FitPlan,
    ) -> Result<Option<FitData>, ApiError> {
        if plan.segment.is_some()
            || plan.holdout_end.is_some()
            || plan.kind.discrete()
            || plan.zone != Tz::UTC
        {
            return Ok(None);
        }
        let (mut cases, mut earliest) = (Vec::new(), None::<DateTime<Utc>>);
        let (end, unit_days) = (plan.calibration_end, plan.unit.days());
        let read = kept::Read {
            end,
            currency: &r.currency_code,
            cohort: plan.cohort.as_ref().map(|(_, start, end)| (*start, *end)),
            full: false,
        };
        let currency = kept::read(&self.pool, self.interaction()?, ctx, read, |row| {
            earliest = Some(earliest.map_or(row.first_time, |e| e.min(row.first_time)));
            cases.push(domain_kept::fit_case(&row, end, unit_days));
        })
        .await?;
        Ok(currency.map(|currency| FitData {
            cases,
            currency,
            earliest,
        }))
    }
}
