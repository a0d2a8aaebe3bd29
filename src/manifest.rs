//! The add-on manifest: `manifest.json` at the repository root is the template; the base URL
//! and key are filled in at run time. The CLI and `GET /manifest` serve the same bytes.

const TEMPLATE: &str = include_str!("../manifest.json");

/// The template as JSON, without the run-time base URL and key.
pub fn template() -> serde_json::Value {
    serde_json::from_str(TEMPLATE).expect("manifest.json is valid JSON (checked by tests)")
}

/// The manifest as served, pretty-printed with a trailing newline.
pub fn render(base_url: &str, addon_key: &str) -> Vec<u8> {
    let mut manifest = template();
    let object = manifest
        .as_object_mut()
        .expect("manifest.json is an object");
    object.insert("key".into(), addon_key.into());
    object.insert("baseUrl".into(), base_url.into());
    let mut bytes = serde_json::to_vec_pretty(&manifest).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

/// Event types the manifest subscribes to directly (the rest are registered via the API).
pub fn manifest_events() -> Vec<String> {
    static EVENTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        template()["webhooks"]
            .as_array()
            .map(|hooks| {
                hooks
                    .iter()
                    .filter_map(|h| h["event"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    });
    EVENTS.clone()
}
