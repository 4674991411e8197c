//! A small HTTP client for tests: status and body of any answer, multipart bodies, uploads.

/// The status and body of an answer, error statuses included; panics on a transport error.
pub fn status_of(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

/// A multipart body from (part name, bytes) pairs, and its content type.
pub fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "ferry-test-boundary-7d1e";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n").as_bytes());
        body.extend(*bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `PUT {base}/v1/models/{model}/versions/{version}` with a multipart body.
pub fn put_version(base: &str, model: &str, version: &str, parts: &[(&str, &[u8])]) -> (u16, String) {
    let (ct, body) = multipart(parts);
    status_of(
        ureq::put(&format!("{base}/v1/models/{model}/versions/{version}"))
            .set("Content-Type", &ct)
            .send_bytes(&body),
    )
}
