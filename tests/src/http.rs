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
pub fn put_version(
    base: &str,
    model: &str,
    version: &str,
    parts: &[(&str, &[u8])],
) -> (u16, String) {
    let (ct, body) = multipart(parts);
    status_of(
        ureq::put(&format!("{base}/v1/models/{model}/versions/{version}"))
            .set("Content-Type", &ct)
            .send_bytes(&body),
    )
}

/// A request body that trickles out (64 KiB every 5 ms), so a server can be killed mid-upload.
pub struct Trickle {
    /// Bytes still to send.
    pub left: usize,
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let n = buf.len().min(self.left).min(64 << 10);
        buf[..n].fill(7);
        self.left -= n;
        Ok(n)
    }
}
