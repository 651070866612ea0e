//! E-mail over SMTP with lettre, on rustls with ring. STARTTLS by default, and required when
//! asked for: a server that does not offer it gets no mail, and never a password in clear.
//! The password is read from its file at each send, so a rotated Secret takes effect.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Channel, SendError};
use crate::clock::Clock;
use crate::notify::config::{SmtpConfig, SmtpTls, std_duration};
use crate::notify::message::Message;
use crate::notify::plan::Audience;

pub struct SmtpChannel {
    config: SmtpConfig,
    from: Mailbox,
    timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl SmtpChannel {
    pub fn new(config: SmtpConfig, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|e| format!("from: {e}"))?;
        let timeout = std_duration("timeout", &config.timeout)?;
        Ok(SmtpChannel {
            config,
            from,
            timeout,
            clock,
        })
    }

    fn port(&self) -> u16 {
        self.config.port.unwrap_or(match self.config.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }

    /// A transport for one send. Reading the password and CA files here keeps rotation simple;
    /// a notification is rare enough that a fresh connection per message costs nothing.
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
        let config = &self.config;
        let tls = || -> Result<TlsParameters, SendError> {
            let mut params = TlsParameters::builder(config.host.clone());
            if let Some(ca) = &config.ca_file {
                let pem = std::fs::read(ca).map_err(|e| {
                    SendError::transient(format!("cannot read caFile {}: {e}", ca.display()))
                })?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| SendError::permanent(format!("caFile {}: {e}", ca.display())))?;
                params = params.add_root_certificate(cert);
            }
            params
                .build_rustls()
                .map_err(|e| SendError::permanent(format!("TLS setup: {e}")))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(self.port())
            .timeout(Some(self.timeout));
        builder = match config.tls {
            SmtpTls::Starttls => builder.tls(Tls::Required(tls()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls()?)),
            SmtpTls::None => builder.tls(Tls::None),
        };
        if let (Some(user), Some(file)) = (&config.username, &config.password_file) {
            let password = std::fs::read_to_string(file).map_err(|e| {
                SendError::transient(format!("cannot read passwordFile {}: {e}", file.display()))
            })?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(builder.build())
    }
}

/// Whether an SMTP failure is worth retrying: 5xx replies are final, everything else (4xx,
/// timeouts, refused connections, TLS handshakes cut short) may pass.
fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let message = format!("SMTP: {error}");
    if error.is_permanent() {
        SendError::permanent(message)
    } else {
        SendError::transient(message)
    }
}

#[async_trait]
impl Channel for SmtpChannel {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    fn audience(&self) -> Audience {
        Audience::PerRecipient
    }

    async fn send(
        &self,
        message: &Message,
        recipient: &str,
        delivery_id: &str,
    ) -> Result<(), SendError> {
        let to = recipient
            .parse::<Mailbox>()
            .map_err(|e| SendError::permanent(format!("{recipient:?} is not an address: {e}")))?;
        let email = lettre::Message::builder()
            .message_id(Some(format!("<{delivery_id}@pim-operator>")))
            .date(SystemTime::from(self.clock.now()))
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| SendError::permanent(format!("cannot build the message: {e}")))?;
        let transport = self.transport()?;
        transport
            .send(email)
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }
}
