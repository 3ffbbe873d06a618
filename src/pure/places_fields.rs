//! Which Place fields herd asks Nearby Search (New) for: the field mask
//! sent in `X-Goog-FieldMask`, from `places.fields` (`"pro"`,
//! `"enterprise"` or a list of field names), and the SKU Google bills it at.
//!
//! It owns the names herd can translate to the legacy JSON and their SKU;
//! the translation itself is `places/upstream/new_api.rs`. Here because the
//! config check and the request both need it, and the config is below
//! Places. Pure: no I/O.
//!
//! Google has no default mask and bills a request at the highest SKU among
//! the fields it asks for; `*` asks for everything, so herd never sends it.

/// Fields billed at the Nearby Search Pro SKU, all of which herd translates:
/// what the legacy JSON of a WHATSAT needs.
pub const PRO_FIELDS: &[&str] = &[
    "id",
    "displayName",
    "location",
    "types",
    "shortFormattedAddress",
    "formattedAddress",
    "businessStatus",
    "iconMaskBaseUri",
    "iconBackgroundColor",
    "plusCode",
    "viewport",
];

/// Fields billed at the Nearby Search Enterprise SKU that herd translates
/// (`rating`, `user_ratings_total`, `price_level`, `opening_hours`).
pub const ENTERPRISE_FIELDS: &[&str] = &[
    "rating",
    "userRatingCount",
    "priceLevel",
    "currentOpeningHours",
];

/// How a request is billed by Google.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sku {
    /// Nearby Search Pro.
    Pro,
    /// Nearby Search Enterprise.
    Enterprise,
}

impl Sku {
    /// Google's name of the SKU.
    pub fn name(self) -> &'static str {
        match self {
            Sku::Pro => "Nearby Search Pro",
            Sku::Enterprise => "Nearby Search Enterprise",
        }
    }
}

/// The fields of one request, checked: what goes in `X-Goog-FieldMask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMask {
    /// Field names without the `places.` prefix, in the order given.
    fields: Vec<&'static str>,
}

impl FieldMask {
    /// The `"pro"` preset: every Pro field herd translates.
    pub fn pro() -> FieldMask {
        FieldMask {
            fields: PRO_FIELDS.to_vec(),
        }
    }

    /// The `"enterprise"` preset: the Pro fields and the Enterprise ones.
    pub fn enterprise() -> FieldMask {
        FieldMask {
            fields: PRO_FIELDS
                .iter()
                .chain(ENTERPRISE_FIELDS)
                .copied()
                .collect(),
        }
    }

    /// A preset by name (`pro`, `enterprise`), or why the name is refused.
    pub fn preset(name: &str) -> Result<FieldMask, String> {
        match name {
            "pro" => Ok(FieldMask::pro()),
            "enterprise" => Ok(FieldMask::enterprise()),
            "*" | "places.*" | "places" => Err(format!(
                "{name:?} asks Google for every field, billed at its highest SKU; use \"pro\", \
                 \"enterprise\" or a list of field names"
            )),
            other => Err(format!(
                "{other:?} is not a preset; use \"pro\", \"enterprise\" or a list of field names"
            )),
        }
    }

    /// A list of field names, each with or without `places.`; every problem
    /// is reported, each naming its place in the list.
    pub fn list(names: &[String]) -> Result<FieldMask, Vec<String>> {
        let mut fields = Vec::with_capacity(names.len());
        let mut problems = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let bare = name.strip_prefix("places.").unwrap_or(name);
            match known(bare) {
                Some(field) if fields.contains(&field) => {
                    problems.push(format!("[{i}] {name:?} is listed twice"));
                }
                Some(field) => fields.push(field),
                None if bare == "*" || name == "places" => problems.push(format!(
                    "[{i}] {name:?} asks Google for every field, billed at its highest SKU; \
                     list the fields instead"
                )),
                None => problems.push(format!(
                    "[{i}] {name:?} is not a field herd translates; one of: {}",
                    PRO_FIELDS
                        .iter()
                        .chain(ENTERPRISE_FIELDS)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        if names.is_empty() {
            problems.push("is empty; Google needs at least one field".to_owned());
        } else if problems.is_empty() && !fields.contains(&"location") {
            problems.push(
                "does not list \"location\": herd leaves out every place without one, so \
                 every answer would be empty"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(FieldMask { fields })
        } else {
            Err(problems)
        }
    }

    /// The header value: `places.<field>` for each field, comma separated.
    pub fn header(&self) -> String {
        let mut header = String::new();
        for field in &self.fields {
            if !header.is_empty() {
                header.push(',');
            }
            header.push_str("places.");
            header.push_str(field);
        }
        header
    }

    /// The SKU Google bills a request with these fields at.
    pub fn sku(&self) -> Sku {
        if self.fields.iter().any(|f| ENTERPRISE_FIELDS.contains(f)) {
            Sku::Enterprise
        } else {
            Sku::Pro
        }
    }
}

/// The static name of a field herd translates.
fn known(name: &str) -> Option<&'static str> {
    PRO_FIELDS
        .iter()
        .chain(ENTERPRISE_FIELDS)
        .find(|f| **f == name)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_pro_preset_asks_for_pro_fields_only_and_never_for_everything() {
        let pro = FieldMask::preset("pro").unwrap();
        assert_eq!(pro.sku(), Sku::Pro);
        let header = pro.header();
        assert!(header.starts_with("places.id,places.displayName,places.location,"));
        assert!(!header.contains('*'));
        assert!(!header.contains("rating"));
        assert_eq!(header.split(',').count(), PRO_FIELDS.len());
    }

    #[test]
    fn the_enterprise_preset_adds_ratings_price_and_opening_hours() {
        let enterprise = FieldMask::preset("enterprise").unwrap();
        assert_eq!(enterprise.sku(), Sku::Enterprise);
        let header = enterprise.header();
        for field in ENTERPRISE_FIELDS {
            assert!(header.contains(&format!("places.{field}")), "{field}");
        }
        assert_eq!(Sku::Enterprise.name(), "Nearby Search Enterprise");
    }

    #[test]
    fn every_field_and_star_presets_are_refused() {
        for star in ["*", "places.*", "places"] {
            let err = FieldMask::preset(star).unwrap_err();
            assert!(err.contains("highest SKU"), "{err}");
        }
        assert!(FieldMask::preset("basic")
            .unwrap_err()
            .contains("not a preset"));
    }

    #[test]
    fn a_list_takes_names_with_or_without_the_places_prefix() {
        let mask = FieldMask::list(&names(&["places.location", "displayName", "id"])).unwrap();
        assert_eq!(
            mask.header(),
            "places.location,places.displayName,places.id"
        );
        assert_eq!(mask.sku(), Sku::Pro);
        let rated = FieldMask::list(&names(&["location", "places.rating"])).unwrap();
        assert_eq!(rated.sku(), Sku::Enterprise);
    }

    #[test]
    fn a_list_reports_every_problem_with_its_position() {
        let problems =
            FieldMask::list(&names(&["location", "*", "reviews", "places.location"])).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("[1] \"*\"") && problems[0].contains("every field"));
        assert!(problems[1].starts_with("[2] \"reviews\" is not a field herd translates"));
        assert!(problems[2].starts_with("[3] \"places.location\" is listed twice"));
        let no_location = FieldMask::list(&names(&["id", "displayName"])).unwrap_err();
        assert!(no_location[0].contains("\"location\""), "{no_location:?}");
        assert!(FieldMask::list(&[]).unwrap_err()[0].contains("empty"));
    }
}
