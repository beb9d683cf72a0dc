use std::future::Future;

use futures::future::try_join;

use crate::BoxError;

/// One step of the pipeline: turns an input into an output, asynchronously, or fails.
pub trait Stage<In>: Send + Sync {
    /// What the stage produces.
    type Out: Send;

    /// Runs the stage on one input.
    fn call(&self, input: In) -> impl Future<Output = Result<Self::Out, BoxError>> + Send;
}

/// Combinators on every [`Stage`].
pub trait StageExt<In>: Stage<In> + Sized {
    /// Feeds this stage's output into `next`.
    fn then<B: Stage<Self::Out>>(self, next: B) -> Then<Self, B> {
        Then {
            first: self,
            second: next,
        }
    }

    /// Transforms this stage's output with a plain function (pre- or post-processing).
    fn map<F, O>(self, f: F) -> Map<Self, F>
    where
        F: Fn(Self::Out) -> O + Send + Sync,
    {
        Map { inner: self, f }
    }
}

impl<In, S: Stage<In>> StageExt<In> for S {}

/// `a.then(b)`: runs `b` on the output of `a`.
#[derive(Debug, Clone)]
pub struct Then<A, B> {
    first: A,
    second: B,
}

impl<In: Send, A, B> Stage<In> for Then<A, B>
where
    A: Stage<In>,
    B: Stage<A::Out>,
{
    type Out = B::Out;

    async fn call(&self, input: In) -> Result<B::Out, BoxError> {
        let mid = self.first.call(input).await?;
        self.second.call(mid).await
    }
}

/// `a.map(f)`: applies `f` to the output of `a`.
#[derive(Debug, Clone)]
pub struct Map<S, F> {
    inner: S,
    f: F,
}

impl<In: Send, S, F, O> Stage<In> for Map<S, F>
where
    S: Stage<In>,
    F: Fn(S::Out) -> O + Send + Sync,
    O: Send,
{
    type Out = O;

    async fn call(&self, input: In) -> Result<O, BoxError> {
        Ok((self.f)(self.inner.call(input).await?))
    }
}

/// Runs two stages on clones of one input concurrently (e.g. detection and fuzzing on one
/// explanation); nest it for more. Fails if either fails.
#[derive(Debug, Clone)]
pub struct FanOut<A, B>(pub A, pub B);

impl<In: Clone + Send, A, B> Stage<In> for FanOut<A, B>
where
    A: Stage<In>,
    B: Stage<In>,
{
    type Out = (A::Out, B::Out);

    async fn call(&self, input: In) -> Result<Self::Out, BoxError> {
        try_join(self.0.call(input.clone()), self.1.call(input)).await
    }
}

/// A stage made from an async function.
#[derive(Debug, Clone)]
pub struct FromFn<F>(F);

/// Makes a stage from an async function or closure.
pub fn from_fn<F>(f: F) -> FromFn<F> {
    FromFn(f)
}

impl<In, F, Fut, O> Stage<In> for FromFn<F>
where
    F: Fn(In) -> Fut + Send + Sync,
    Fut: Future<Output = Result<O, BoxError>> + Send,
    O: Send,
{
    type Out = O;

    fn call(&self, input: In) -> impl Future<Output = Result<O, BoxError>> + Send {
        (self.0)(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn combinators_compose() {
        let double = from_fn(|x: i32| async move { Ok(x * 2) });
        let fail_on_odd = from_fn(|x: i32| async move {
            if x % 2 == 1 {
                Err::<i32, BoxError>(format!("odd {x}").into())
            } else {
                Ok(x)
            }
        });
        let both = FanOut(
            double.clone().map(|x| x + 1),
            double.clone().then(double.clone()),
        );
        assert_eq!(both.call(5).await.unwrap(), (11, 20));
        let err = FanOut(double, fail_on_odd).call(3).await.unwrap_err();
        assert_eq!(err.to_string(), "odd 3");
    }
}
