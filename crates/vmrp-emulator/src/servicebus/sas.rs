//! Shared Access Signature tokens: signing, and the check the send endpoint applies to them.

use super::*;

/// Computes the SAS signature (base64 HMAC-SHA256 of `"{sr}\n{se}"` keyed with the key's UTF-8
/// bytes). `sr` is the URL-encoded resource as it appears in the token.
pub fn sas_signature(sr_encoded: &str, se: &str, key: &str) -> String {
    use base64::Engine;
    // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{sr_encoded}\n{se}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Builds a SAS token value (without the `SharedAccessSignature ` prefix) the way the legacy
/// crate does: `sr=<urlencoded url>&sig=<urlencoded sig>&se=<unix>&skn=<name>`.
pub fn sas_token(resource_url: &str, key_name: &str, key: &str, expiry_unix: i64) -> String {
    let sr = urlencoding::encode(resource_url).into_owned();
    let se = expiry_unix.to_string();
    let sig = sas_signature(&sr, &se, key);
    format!(
        "sr={sr}&sig={}&se={se}&skn={key_name}",
        urlencoding::encode(&sig)
    )
}

/// Verifies a SAS token against the key, the expiry (real unix seconds) and the resource: `sr`
/// may be the real namespace URL or this emulator's own address, for the whole namespace or the
/// queue (clients sign the https URL: https://learn.microsoft.com/azure/service-bus-messaging/service-bus-sas#generate-a-shared-access-signature-token).
pub fn verify_sas(
    token: &str,
    key_name: &str,
    key: &str,
    namespace: &str,
    queue: &str,
    now_unix: i64,
) -> Result<(), String> {
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for part in token.trim().split('&') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("malformed SAS field {part:?}"))?;
        fields.insert(k, v);
    }
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| format!("SAS token lacks the {k} field"))
    };
    let (sr_raw, sig_raw, se, skn) = (get("sr")?, get("sig")?, get("se")?, get("skn")?);
    if skn != key_name {
        return Err(format!("unknown SAS key name {skn:?}"));
    }
    let expiry: i64 = se
        .parse()
        .map_err(|_| format!("SAS se must be unix seconds, got {se:?}"))?;
    if expiry <= now_unix {
        return Err("the SAS token has expired".into());
    }
    let sr =
        urlencoding::decode(sr_raw).map_err(|_| "SAS sr is not URL-encoded UTF-8".to_string())?;
    if !sas_resource_covers(&sr, namespace, queue) {
        return Err(format!("SAS sr {sr:?} does not cover queue {queue:?}"));
    }
    let sig = urlencoding::decode(sig_raw).map_err(|_| "SAS sig is not URL-encoded".to_string())?;
    // Signers differ in how they percent-encode `sr`; accept the token's own spelling or the
    // canonical encoding of the decoded URL.
    let canonical = urlencoding::encode(&sr).into_owned();
    let ok = [sr_raw, canonical.as_str(), &canonical.to_ascii_lowercase()]
        .iter()
        .any(|s| constant_time_eq(sas_signature(s, se, key).as_bytes(), sig.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err("SAS signature does not match the key".into())
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn sas_resource_covers(sr: &str, namespace: &str, queue: &str) -> bool {
    let lower = sr.to_ascii_lowercase();
    let without_scheme = lower
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(&lower);
    let (host, path) = without_scheme
        .split_once('/')
        .unwrap_or((without_scheme, ""));
    let host = host.split(':').next().unwrap_or(host);
    let host_ok = host == format!("{}.servicebus.windows.net", namespace.to_ascii_lowercase())
        || host == "127.0.0.1"
        || host == "localhost";
    let path = path.trim_matches('/');
    let queue = queue.to_ascii_lowercase();
    host_ok && (path.is_empty() || path == queue || path.starts_with(&format!("{queue}/")))
}
