//! Exports `ferry:model/model@0.2.0` — not the version the host serves.

wit_bindgen::generate!({
    inline: "
        package ferry:model@0.2.0;
        interface model {
            predict: func(request: string) -> result<string, string>;
        }
        world ferry-model { export model; }
    ",
});

struct Future;

impl exports::ferry::model::model::Guest for Future {
    fn predict(request: String) -> Result<String, String> {
        Ok(request)
    }
}

export!(Future);
