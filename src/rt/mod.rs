//! Glue between the runtime (glommio) and the libraries that expect another
//! (hyper): low, so that the Places client, the phones' endpoint and the
//! admin endpoint all build on it without naming one another; and a change
//! notice among one thread's tasks.

pub mod http;
pub mod notice;
