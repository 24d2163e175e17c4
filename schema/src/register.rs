//! The customer register export, as the hosting company's CRM would hand it over.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegisterExport {
    /// RFC 3339 time of the export.
    pub exported_at: String,
    pub plans: Vec<Plan>,
    pub customers: Vec<Customer>,
}

/// A hosting plan: how usage is metered and what the monthly fee includes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub plan: String,
    /// `requests`, `visits_ip` or `visits_ip_ua` (see README, "Metering").
    pub metering: String,
    /// Units included per month; usage above is overage.
    pub included: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub customer_id: String,
    pub company_name: String,
    /// Finnish business ID (Y-tunnus), `1234567-8` with its check digit.
    pub business_id: String,
    pub billing_address: Address,
    pub billing_email: String,
    pub contacts: Vec<Contact>,
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub street: String,
    pub postal_code: String,
    pub city: String,
    pub country: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub role: String,
}

/// A site and the domains it answers to, owned by its customer over `[valid_from, valid_to)`
/// (Europe/Helsinki calendar dates; `valid_to` null = still owned).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub site_id: String,
    pub primary_domain: String,
    /// Further exact domains (e.g. `www.` forms) and wildcards such as `*.example.fi`.
    pub aliases: Vec<String>,
    pub plan: String,
    pub valid_from: String,
    pub valid_to: Option<String>,
}

/// Check digit of a Finnish business ID body (7 digits), weights 7,9,10,5,8,4,2 mod 11.
pub fn business_id_check_digit(body: &str) -> Option<u32> {
    const W: [u32; 7] = [7, 9, 10, 5, 8, 4, 2];
    if body.len() != 7 {
        return None;
    }
    let mut sum = 0;
    for (c, w) in body.chars().zip(W) {
        sum += c.to_digit(10)? * w;
    }
    match sum % 11 {
        0 => Some(0),
        1 => None, // bodies with remainder 1 are never issued
        r => Some(11 - r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_id_check_digits() {
        // Published example IDs: 0112038-9 (Nokia Oyj), 1572860-0 (Supercell Oy).
        assert_eq!(business_id_check_digit("0112038"), Some(9));
        assert_eq!(business_id_check_digit("1572860"), Some(0));
        assert_eq!(business_id_check_digit("12a4567"), None);
    }
}
