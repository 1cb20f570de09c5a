//! tower layers over the guard primitives, for services that compose middleware (the
//! future service connection pool). Each layer's service turns its inner error into a
//! [`BoxError`]; refusals are [`GuardError`]s inside it (`err.downcast_ref::<GuardError>()`).
//!
//! Admission happens in `call`, not `poll_ready`: these guards decide per request (by key,
//! by class), and tower's readiness is per service. The inner service is still driven to
//! readiness before it is called. Each call boxes its future (one allocation): the
//! allocation-free path is [`crate::RouteGuard`], which the proxy uses directly.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use hastack_guard::layer::*;
//! use hastack_guard::{Breaker, BreakerPolicy, ConcurrencyLimiter, ConcurrencyPolicy,
//!     GuardError, RateLimitPolicy, RateLimiter, RetryPolicy, SharedBudget};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let breaker = Breaker::new(BreakerPolicy::default(), 7);
//! let limiter = ConcurrencyLimiter::new(ConcurrencyPolicy::fixed(64, 128, Duration::from_secs(1)));
//! let rate = Arc::new(RateLimiter::new(RateLimitPolicy::new("api", 1000, Duration::from_secs(1)))?);
//! let retry = RetryPolicy::default();
//! let budget = Arc::new(SharedBudget::new(retry.budget));
//!
//! // Outermost first: fallback answers whatever the guards below refuse.
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(|e: &BoxError| {
//!         e.downcast_ref::<GuardError>().map(|_| "degraded".to_string())
//!     }))
//!     .layer(RateLimitLayer::new(rate, |_: &String| 0))
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .layer(RetryLayer::new(retry, budget, |r: &Result<String, BoxError>| r.is_err()))
//!     .layer(BreakerLayer::new(breaker, ErrorsFail))
//!     .layer(ConcurrencyLayer::bulkhead(limiter, ErrorsFail))
//!     .service(service_fn(|req: String| async move { Ok::<_, BoxError>(format!("hello {req}")) }));
//!
//! assert_eq!(svc.oneshot("pool".to_string()).await?, "hello pool");
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::Breaker;
use crate::concurrency::{ConcurrencyLimiter, Outcome};
use crate::fallback::RouteSwitch;
use crate::rate::{RateDecision, RateLimiter};
use crate::retry::{Retrier, RetryPolicy, SharedBudget};
use crate::shed::ClassId;
use crate::{GuardError, RejectReason};

/// The error type every layer here returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Decides how a call ended, for breakers and adaptive limits.
pub trait Classify<T>: Clone + Send + Sync + 'static {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, BoxError>) -> Outcome;
}

/// `Ok` is a success; a [`GuardError::Timeout`] is a drop; any other error a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorsFail;

impl<T> Classify<T> for ErrorsFail {
    fn classify(&self, result: &Result<T, BoxError>) -> Outcome {
        classify_err(result)
    }
}

fn classify_err<T>(result: &Result<T, BoxError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) if matches!(e.downcast_ref::<GuardError>(), Some(GuardError::Timeout(_))) => {
            Outcome::Dropped
        }
        Err(_) => Outcome::Failure,
    }
}

/// For HTTP responses: 503 is a drop, other 5xx a failure, everything else a success;
/// errors as in [`ErrorsFail`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpStatus;

impl<B> Classify<http::Response<B>> for HttpStatus {
    fn classify(&self, result: &Result<http::Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(r) if r.status() == http::StatusCode::SERVICE_UNAVAILABLE => Outcome::Dropped,
            Ok(r) if r.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => classify_err(result),
        }
    }
}

/// Take the ready inner service out, leaving a clone (tower's usual pattern).
fn take<S: Clone>(s: &mut S) -> S {
    let clone = s.clone();
    std::mem::replace(s, clone)
}

macro_rules! ready_inner {
    () => {
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.inner.poll_ready(cx).map_err(Into::into)
        }
    };
}

// ---------------------------------------------------------------------------------------
// Timeout

/// Fail calls that take longer than a limit with [`GuardError::Timeout`].
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// Calls get `limit`.
    pub fn new(limit: Duration) -> Self {
        TimeoutLayer { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;
    ready_inner!();

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(GuardError::Timeout(limit).into()),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Retry

/// Retry failed calls with jittered back-off, bounded by attempts and a shared budget.
/// Only wrap services whose requests are safe to repeat (idempotent); refusals by guards
/// below this layer are always safe.
#[derive(Clone, Debug)]
pub struct RetryLayer<F> {
    policy: RetryPolicy,
    budget: Arc<SharedBudget>,
    retry_if: F,
}

impl<F> RetryLayer<F> {
    /// Retry when `retry_if(&result)` says so.
    pub fn new(policy: RetryPolicy, budget: Arc<SharedBudget>, retry_if: F) -> Self {
        RetryLayer {
            policy,
            budget,
            retry_if,
        }
    }
}

impl<S, F: Clone> Layer<S> for RetryLayer<F> {
    type Service = Retry<S, F>;
    fn layer(&self, inner: S) -> Retry<S, F> {
        Retry {
            inner,
            policy: self.policy,
            budget: Arc::clone(&self.budget),
            retry_if: self.retry_if.clone(),
        }
    }
}

/// See [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S, F> {
    inner: S,
    policy: RetryPolicy,
    budget: Arc<SharedBudget>,
    retry_if: F,
}

impl<S, F, Req> Service<Req> for Retry<S, F>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Clone + Send + 'static,
    F: Fn(&Result<S::Response, BoxError>) -> bool + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;
    ready_inner!();

    fn call(&mut self, req: Req) -> Self::Future {
        let mut inner = take(&mut self.inner);
        let (policy, budget, retry_if) =
            (self.policy, Arc::clone(&self.budget), self.retry_if.clone());
        Box::pin(async move {
            let mut rng = fastrand::Rng::new();
            let mut retrier = Retrier::start(&policy, &budget, Instant::now());
            let mut first = true;
            loop {
                if !first {
                    inner.ready().await.map_err(Into::into)?;
                }
                first = false;
                let fut = inner.call(req.clone());
                let r: Result<S::Response, BoxError> = match policy.per_try_timeout {
                    Some(t) => match tokio::time::timeout(t, fut).await {
                        Ok(r) => r.map_err(Into::into),
                        Err(_) => Err(GuardError::Timeout(t).into()),
                    },
                    None => fut.await.map_err(Into::into),
                };
                if !retry_if(&r) {
                    return r;
                }
                match retrier.next_delay(Instant::now(), true, &mut rng) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return r,
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Breaker

/// Refuse calls while a [`Breaker`] is open; feed it each call's outcome.
#[derive(Clone, Debug)]
pub struct BreakerLayer<C> {
    breaker: Arc<Breaker>,
    classify: C,
}

impl<C> BreakerLayer<C> {
    /// Guard with `breaker`, judging outcomes with `classify`.
    pub fn new(breaker: Arc<Breaker>, classify: C) -> Self {
        BreakerLayer { breaker, classify }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;
    fn layer(&self, inner: S) -> BreakerService<S, C> {
        BreakerService {
            inner,
            breaker: Arc::clone(&self.breaker),
            classify: self.classify.clone(),
        }
    }
}

/// See [`BreakerLayer`].
#[derive(Clone, Debug)]
pub struct BreakerService<S, C> {
    inner: S,
    breaker: Arc<Breaker>,
    classify: C,
}

impl<S, C, Req> Service<Req> for BreakerService<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
    C: Classify<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;
    ready_inner!();

    fn call(&mut self, req: Req) -> Self::Future {
        let mut inner = take(&mut self.inner);
        let (breaker, classify) = (Arc::clone(&self.breaker), self.classify.clone());
        Box::pin(async move {
            let permit =
                breaker
                    .acquire(Instant::now())
                    .map_err(|retry_after| GuardError::Rejected {
                        reason: RejectReason::BreakerOpen,
                        retry_after: Some(retry_after),
                    })?;
            let r = inner.call(req).await.map_err(Into::into);
            let _ = permit.record(Instant::now(), classify.classify(&r) != Outcome::Success);
            r
        })
    }
}

// ---------------------------------------------------------------------------------------
// Rate limit

/// Refuse (or pace) calls beyond a [`RateLimiter`]; `key_fn` maps a request to its key.
#[derive(Clone, Debug)]
pub struct RateLimitLayer<K> {
    limiter: Arc<RateLimiter>,
    key_fn: K,
}

impl<K> RateLimitLayer<K> {
    /// Limit with `limiter`, keyed by `key_fn` (return 0 for a global limiter).
    pub fn new(limiter: Arc<RateLimiter>, key_fn: K) -> Self {
        RateLimitLayer { limiter, key_fn }
    }
}

impl<S, K: Clone> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;
    fn layer(&self, inner: S) -> RateLimit<S, K> {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
            key_fn: self.key_fn.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S, K> {
    inner: S,
    limiter: Arc<RateLimiter>,
    key_fn: K,
}

impl<S, K, Req> Service<Req> for RateLimit<S, K>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
    K: Fn(&Req) -> u64,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;
    ready_inner!();

    fn call(&mut self, req: Req) -> Self::Future {
        let decision = self.limiter.check((self.key_fn)(&req));
        let mut inner = take(&mut self.inner);
        Box::pin(async move {
            match decision {
                RateDecision::Allow(_) => {}
                RateDecision::Delay(d, _) => tokio::time::sleep(d).await,
                RateDecision::Reject(i) => {
                    return Err(GuardError::Rejected {
                        reason: RejectReason::RateLimited,
                        retry_after: Some(i.retry_after),
                    }
                    .into());
                }
            }
            inner.call(req).await.map_err(Into::into)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Concurrency: bulkhead, adaptive limit, priority shedding

/// Admit calls through a [`ConcurrencyLimiter`] (fixed bulkhead, adaptive limit, and/or
/// priority shedding, as its policy says); feeds it each call's outcome.
#[derive(Clone, Debug)]
pub struct ConcurrencyLayer<P, C> {
    limiter: Arc<ConcurrencyLimiter>,
    class_fn: P,
    classify: C,
}

/// A class function that puts every request in the top class.
#[derive(Clone, Copy, Debug, Default)]
pub struct TopClass;

impl<C> ConcurrencyLayer<TopClass, C> {
    /// A bulkhead (or adaptive limit) without priorities.
    pub fn bulkhead(limiter: Arc<ConcurrencyLimiter>, classify: C) -> Self {
        ConcurrencyLayer {
            limiter,
            class_fn: TopClass,
            classify,
        }
    }
}

impl<P, C> ConcurrencyLayer<P, C> {
    /// With priority shedding: `class_fn` gives each request's class.
    pub fn shedding(limiter: Arc<ConcurrencyLimiter>, class_fn: P, classify: C) -> Self {
        ConcurrencyLayer {
            limiter,
            class_fn,
            classify,
        }
    }
}

/// Maps a request to its priority class.
pub trait ClassOf<Req>: Clone + Send + Sync + 'static {
    /// The class of `req`.
    fn class_of(&self, req: &Req) -> ClassId;
}

impl<Req> ClassOf<Req> for TopClass {
    fn class_of(&self, _: &Req) -> ClassId {
        ClassId(0)
    }
}

impl<Req, F: Fn(&Req) -> ClassId + Clone + Send + Sync + 'static> ClassOf<Req> for F {
    fn class_of(&self, req: &Req) -> ClassId {
        self(req)
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for ConcurrencyLayer<P, C> {
    type Service = Concurrency<S, P, C>;
    fn layer(&self, inner: S) -> Concurrency<S, P, C> {
        Concurrency {
            inner,
            limiter: Arc::clone(&self.limiter),
            class_fn: self.class_fn.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// See [`ConcurrencyLayer`].
#[derive(Clone, Debug)]
pub struct Concurrency<S, P, C> {
    inner: S,
    limiter: Arc<ConcurrencyLimiter>,
    class_fn: P,
    classify: C,
}

impl<S, P, C, Req> Service<Req> for Concurrency<S, P, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
    P: ClassOf<Req>,
    C: Classify<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;
    ready_inner!();

    fn call(&mut self, req: Req) -> Self::Future {
        let class = self.class_fn.class_of(&req);
        let mut inner = take(&mut self.inner);
        let (limiter, classify) = (Arc::clone(&self.limiter), self.classify.clone());
        Box::pin(async move {
            let permit = limiter
                .acquire(class, Instant::now())
                .await
                .map_err(|reason| GuardError::Rejected {
                    reason,
                    retry_after: None,
                })?;
            let r = inner.call(req).await.map_err(Into::into);
            permit.complete(Instant::now(), classify.classify(&r));
            r
        })
    }
}

// ---------------------------------------------------------------------------------------
// Switch and fallback

/// Refuse every call with [`RejectReason::Disabled`] while a [`RouteSwitch`] is off.
#[derive(Clone, Debug)]
pub struct SwitchLayer {
    switch: Arc<RouteSwitch>,
}

impl SwitchLayer {
    /// Guard with `switch`.
    pub fn new(switch: Arc<RouteSwitch>) -> Self {
        SwitchLayer { switch }
    }
}

impl<S> Layer<S> for SwitchLayer {
    type Service = Switch<S>;
    fn layer(&self, inner: S) -> Switch<S> {
        Switch {
            inner,
            switch: Arc::clone(&self.switch),
        }
    }
}

/// See [`SwitchLayer`].
#[derive(Clone, Debug)]
pub struct Switch<S> {
    inner: S,
    switch: Arc<RouteSwitch>,
}

impl<S, Req> Service<Req> for Switch<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;
    ready_inner!();

    fn call(&mut self, req: Req) -> Self::Future {
        if self.switch.is_disabled() {
            return Box::pin(std::future::ready(Err(GuardError::Rejected {
                reason: RejectReason::Disabled,
                retry_after: None,
            }
            .into())));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Replace errors with a fallback response when `f(&error)` returns one.
#[derive(Clone, Debug)]
pub struct FallbackLayer<F> {
    f: F,
}

impl<F> FallbackLayer<F> {
    /// Answer `f(&err)` instead of `err` when it is `Some`.
    pub fn new(f: F) -> Self {
        FallbackLayer { f }
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = FallbackService<S, F>;
    fn layer(&self, inner: S) -> FallbackService<S, F> {
        FallbackService {
            inner,
            f: self.f.clone(),
        }
    }
}

/// See [`FallbackLayer`].
#[derive(Clone, Debug)]
pub struct FallbackService<S, F> {
    inner: S,
    f: F,
}

impl<S, F, Req> Service<Req> for FallbackService<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    F: Fn(&BoxError) -> Option<S::Response> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;
    ready_inner!();

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let f = self.f.clone();
        Box::pin(async move {
            match fut.await.map_err(Into::into) {
                Ok(r) => Ok(r),
                Err(e) => match f(&e) {
                    Some(r) => Ok(r),
                    None => Err(e),
                },
            }
        })
    }
}
