//! The wit-bindgen plumbing: the one place that knows the model is a component.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::{Error, Init, Inputs, Model};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // The world with `wasi:nn`: a model that never opens a graph imports none of it (unused
        // imports are left out of the component), so only graph models need their version's grant.
        world: "ferry-graph-model",
        // Bindings for the interfaces of other packages (wasi:nn) are generated here too.
        generate_all,
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "ferry_sdk::__private::bindings",
        // Model crates depend on ferry-sdk alone, so generated code reaches wit-bindgen through us.
        runtime_path: "ferry_sdk::__private::wit_bindgen::rt",
    });
}

use bindings::exports::ferry::model::model::{
    Guest, ModelError, ModelMetadata, SelfTestSuite, Tensor,
};

thread_local! {
    // A component instance runs one model on one thread; `init` fills this once.
    static LOADED: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_model<M: Model, R>(f: impl FnOnce(&M) -> Result<R, ModelError>) -> Result<R, ModelError> {
    LOADED.with(|slot| {
        let slot = slot.borrow();
        let model = slot
            .as_ref()
            .and_then(|m| m.downcast_ref::<M>())
            .ok_or_else(|| ModelError::Internal("the model was called before `init`".into()))?;
        f(model)
    })
}

impl From<Error> for ModelError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => ModelError::InvalidInput(m),
            Error::Unsupported(m) => ModelError::Unsupported(m),
            Error::Internal(m) => ModelError::Internal(m),
        }
    }
}

/// Adapts a [`Model`] to the generated `Guest` trait; named by [`crate::export_model!`].
#[doc(hidden)]
pub struct Exported<M>(PhantomData<M>);

impl<M: Model> Guest for Exported<M> {
    fn init(config: String, weights: Option<Vec<u8>>) -> Result<(), ModelError> {
        let config = if config.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(&config)
                .map_err(|e| ModelError::Internal(format!("config is not valid JSON: {e}")))?
        };
        let model = M::load(Init { config, weights })?;
        LOADED.with(|slot| *slot.borrow_mut() = Some(Box::new(model)));
        Ok(())
    }

    fn metadata() -> ModelMetadata {
        with_model::<M, _>(|m| Ok(m.metadata().into())).unwrap_or_else(|e| ModelMetadata {
            platform: String::new(),
            description: format!("{e:?}"),
            inputs: vec![],
            outputs: vec![],
            predicts_json: false,
        })
    }

    fn infer(inputs: Vec<Tensor>, parameters: String) -> Result<Vec<Tensor>, ModelError> {
        let parameters = if parameters.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(&parameters).map_err(|e| {
                ModelError::InvalidInput(format!("parameters are not valid JSON: {e}"))
            })?
        };
        with_model::<M, _>(|m| Ok(m.infer(Inputs::new(inputs, parameters))?))
    }

    fn predict(request: String) -> Result<String, ModelError> {
        with_model::<M, _>(|m| Ok(m.predict_json(&request)?))
    }

    fn self_tests() -> SelfTestSuite {
        with_model::<M, _>(|m| Ok(m.self_tests().into())).unwrap_or_else(|_| SelfTestSuite {
            cases: vec![],
            documents: vec![],
        })
    }
}
