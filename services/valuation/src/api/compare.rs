//! CompareModels: the transaction models fitted on the same data and
//! window, compared by information criteria and holdout validation, one
//! recommended (`domain::compare`). Nothing is stored.

use super::*;
use crate::domain::compare::{self, Candidate};

/// The kinds compared when the request names none.
const TRANSACTION_KINDS: [Kind; 3] = [Kind::BgNbd, Kind::ParetoNbd, Kind::MbgNbd];

impl ValuationApi {
    /// Validates `r`, reads the data once, fits every kind and compares.
    pub(super) async fn compare(
        &self,
        ctx: &CallContext,
        r: pb::CompareModelsRequest,
    ) -> Result<pb::CompareModelsResponse, ApiError> {
        let mut v = Violations::new();
        let mut kinds = Vec::new();
        for (i, k) in r.kinds.iter().enumerate() {
            // BG/BB and sBG are fitted on opportunity histories: their
            // likelihoods do not compare with these.
            match Kind::from_proto(*k).filter(|k| TRANSACTION_KINDS.contains(k)) {
                None => v.add(
                    format!("kinds[{i}]"),
                    "must be BG_NBD, PARETO_NBD or MBG_NBD (the models of the same continuous-time data)",
                ),
                Some(k) if kinds.contains(&k) => v.add(format!("kinds[{i}]"), "is given twice"),
                Some(k) => kinds.push(k),
            }
        }
        if r.kinds.is_empty() {
            kinds = TRANSACTION_KINDS.to_vec();
        }
        v.check(
            !(0..=100_000).contains(&r.max_iterations),
            "max_iterations",
            "must be in 0..=100000 (0 means 1000)",
        );
        let fit = pb::FitModelRequest {
            kind: Kind::BgNbd.to_proto(),
            scope: r.scope,
            calibration_end_time: r.calibration_end_time,
            period_unit: r.period_unit,
            holdout_end_time: r.holdout_end_time,
            inline_summaries: r.inline_summaries,
            calibration_end_date: r.calibration_end_date,
            holdout_end_date: r.holdout_end_date,
            time_zone: r.time_zone,
            ..Default::default()
        };
        let plan = check_fit(&mut v, &fit, Utc::now(), ctx.zone_or_tenant(&fit.time_zone));
        v.finish()?;
        let plan = plan.ok_or_else(|| ApiError::invalid("calibration_end_time", "required"))?;
        let FitData {
            cases, earliest, ..
        } = self.fit_data(ctx, &fit, &plan).await?;
        let holdout = holdout_periods(&plan);
        let max_iterations = match r.max_iterations {
            0 => 1000,
            n => n as u64,
        };
        let asked = kinds.clone();
        let outcomes = tokio::task::spawn_blocking(move || {
            asked
                .iter()
                .map(|k| fitting::fit(*k, &cases, max_iterations, holdout, ""))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::FailedPrecondition(e.0))?;
        let customers = outcomes.first().map_or(0, |o| o.customer_count);
        let n = usize::try_from(customers).unwrap_or(0);
        let candidates: Vec<Candidate> = kinds
            .iter()
            .zip(&outcomes)
            .map(|(kind, o)| Candidate {
                kind: *kind,
                log_likelihood: o.log_likelihood,
                parameter_count: kind.names().len(),
                converged: o.converged,
                holdout_error: o.validation.as_ref().map(|v| v.bucket_mean_absolute_error),
            })
            .collect();
        let recommendation = compare::recommend(&candidates, n);
        let models = candidates
            .iter()
            .zip(&outcomes)
            .map(|(c, o)| pb::ModelComparison {
                kind: c.kind.to_proto(),
                parameters: parameters(o),
                log_likelihood: c.log_likelihood,
                parameter_count: c.parameter_count as i32,
                aic: compare::aic(c.log_likelihood, c.parameter_count),
                bic: compare::bic(c.log_likelihood, c.parameter_count, n),
                converged: c.converged,
                holdout_validation: o.validation.as_ref().map(validation),
            })
            .collect();
        Ok(pb::CompareModelsResponse {
            models,
            recommended_kind: recommendation.as_ref().map_or(0, |r| r.kind.to_proto()),
            recommendation_reason: recommendation.map(|r| r.reason).unwrap_or_default(),
            customer_count: customers,
            data_window: Some(data_window(&plan, earliest)),
        })
    }
}
