/// The standard contact the parent service sends; each connector maps it to its CRM's fields.
public struct Contact: Sendable, Equatable {
    public struct Address: Sendable, Equatable {
        public var line1, line2, city, region, postalCode, country: String?
        public var isEmpty: Bool { [line1, line2, city, region, postalCode, country].allSatisfy { $0 == nil } }
    }

    public var email: String
    public var firstName, lastName, phone, company, title: String?
    public var address: Address?
    /// string → string, number, boolean or null
    public var customProperties: [(String, JSON)]

    public static func == (a: Contact, b: Contact) -> Bool { a.json == b.json }

    /// Whether `key` is a contact field. A switch over literals rather than a shared Set: this
    /// runs for every key of every contact, and a Set's reference count, taken by every request
    /// thread, bounces between the cores (see IntegrationSettings.isSpecific).
    public static func isField(_ key: String) -> Bool {
        switch key {
        case "email", "first_name", "last_name", "phone", "company", "title", "address", "custom_properties": true
        default: false
        }
    }

    static func isAddressField(_ key: String) -> Bool {
        switch key {
        case "line1", "line2", "city", "region", "postal_code", "country": true
        default: false
        }
    }

    /// Reads the contact's fields from `r` (which may hold other allowed keys such as `crm_types`).
    public static func read(_ r: inout FieldReader) -> Contact? {
        let email = r.string("email", required: true, maxLength: 254)
        if let email, !isEmail(email) {
            r.add("email", "value is not a valid email address: An email address must have an @-sign and a domain with a dot.", type: "value_error")
        }
        var contact = Contact(email: email ?? "", customProperties: [])
        contact.firstName = r.string("first_name", nonEmpty: false, maxLength: 255)
        contact.lastName = r.string("last_name", nonEmpty: false, maxLength: 255)
        contact.phone = r.string("phone", nonEmpty: false, maxLength: 64)
        contact.company = r.string("company", nonEmpty: false, maxLength: 255)
        contact.title = r.string("title", nonEmpty: false, maxLength: 255)
        if let addressJSON = r.object("address"), var a = FieldReader(addressJSON, at: r.loc + ["address"]) {
            a.rejectUnknown(where: isAddressField)
            let address = Address(
                line1: a.string("line1", nonEmpty: false, maxLength: 255), line2: a.string("line2", nonEmpty: false, maxLength: 255),
                city: a.string("city", nonEmpty: false, maxLength: 255), region: a.string("region", nonEmpty: false, maxLength: 255),
                postalCode: a.string("postal_code", nonEmpty: false, maxLength: 64), country: a.string("country", nonEmpty: false, maxLength: 255))
            r.merge(a.issues)
            contact.address = address
        }
        if let custom = r.object("custom_properties")?.objectValue {
            for (key, value) in custom {
                switch value {
                case .string, .int, .double, .bool, .null: contact.customProperties.append((key, value))
                default:
                    r.issues_append(r.loc + ["custom_properties", .key(key)], "Input should be a valid string, number, boolean or null", type: "value_error")
                }
                if key.isEmpty || key.utf8.count > 255 {
                    r.issues_append(r.loc + ["custom_properties", .key(key)], "Property names must be 1-255 characters", type: "value_error")
                }
            }
        }
        guard email != nil, r.issues.isEmpty else { return nil }
        return contact
    }

    /// A pragmatic address check: one @, a non-empty local part, a dotted domain, no spaces.
    public static func isEmail(_ s: String) -> Bool {
        // Byte-wise (this runs for every contact and event): one "@", a non-empty local part of
        // at most 64 bytes, a dotted domain without empty labels at its ends or in a row, and no
        // whitespace, comma, angle bracket or double quote anywhere.
        let bytes = Array(s.utf8)
        guard let at = bytes.firstIndex(of: UInt8(ascii: "@")), bytes.lastIndex(of: UInt8(ascii: "@")) == at,
              at > 0, at <= 64 else { return false }
        let domain = bytes[(at + 1)...]
        guard domain.contains(UInt8(ascii: ".")), domain.first != UInt8(ascii: "."), domain.last != UInt8(ascii: ".") else { return false }
        var previous: UInt8 = 0
        for byte in domain {
            if byte == UInt8(ascii: "."), previous == UInt8(ascii: ".") { return false }
            previous = byte
        }
        for byte in bytes {
            switch byte {
            case 0x09...0x0D, 0x20, UInt8(ascii: ","), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "\""): return false
            case 0x80...: return !s.unicodeScalars.contains { $0.properties.isWhitespace }  // e.g. U+00A0, U+2028
            default: continue
            }
        }
        return true
    }

    public var json: JSON {
        var pairs: [(String, JSON)] = [("email", .string(email))]
        if let firstName { pairs.append(("first_name", .string(firstName))) }
        if let lastName { pairs.append(("last_name", .string(lastName))) }
        if let phone { pairs.append(("phone", .string(phone))) }
        if let company { pairs.append(("company", .string(company))) }
        if let title { pairs.append(("title", .string(title))) }
        if let address {
            pairs.append(("address", .object([
                ("line1", JSON(address.line1)), ("line2", JSON(address.line2)), ("city", JSON(address.city)),
                ("region", JSON(address.region)), ("postal_code", JSON(address.postalCode)), ("country", JSON(address.country)),
            ].filter { !$0.1.isNull })))
        }
        if !customProperties.isEmpty { pairs.append(("custom_properties", .object(customProperties))) }
        return .object(pairs)
    }
}

/// An event the parent service records against a contact.
public struct Event: Sendable, Equatable {
    public var name: String
    public var email: String
    public var properties: [(String, JSON)]
    public var value: Double?
    /// ISO-8601 as given (validated).
    public var timestamp: String?
    public var uniqueID: String?

    public static func == (a: Event, b: Event) -> Bool { a.json == b.json }

    /// Whether `key` is an event field (a switch, as `Contact.isField`).
    public static func isField(_ key: String) -> Bool {
        switch key {
        case "event", "email", "properties", "value", "timestamp", "unique_id": true
        default: false
        }
    }

    public static func read(_ r: inout FieldReader) -> Event? {
        let name = r.string("event", required: true, maxLength: 127)
        let email = r.string("email", required: true, maxLength: 254)
        if let email, !Contact.isEmail(email) {
            r.add("email", "value is not a valid email address: An email address must have an @-sign and a domain with a dot.", type: "value_error")
        }
        let properties = r.object("properties")?.objectValue ?? []
        let value = r.number("value")
        let timestamp = r.string("timestamp", maxLength: 64)
        if let timestamp, !Timestamp.isISO8601(timestamp) {
            r.add("timestamp", "Input should be a valid datetime (ISO 8601)", type: "datetime_parsing")
        }
        let uniqueID = r.string("unique_id", maxLength: 255)
        guard let name, let email, r.issues.isEmpty else { return nil }
        return Event(name: name, email: email, properties: properties, value: value, timestamp: timestamp, uniqueID: uniqueID)
    }

    public var json: JSON {
        var pairs: [(String, JSON)] = [("event", .string(name)), ("email", .string(email)), ("properties", .object(properties))]
        if let value { pairs.append(("value", .double(value))) }
        if let timestamp { pairs.append(("timestamp", .string(timestamp))) }
        if let uniqueID { pairs.append(("unique_id", .string(uniqueID))) }
        return .object(pairs)
    }
}

extension Contact {
    /// The standard fields that have a value, by their field-mapping names (`address.city`, ...).
    public var standardValues: [(String, String)] {
        var values: [(String, String?)] = [
            ("email", email), ("first_name", firstName), ("last_name", lastName), ("phone", phone),
            ("company", company), ("title", title),
        ]
        if let a = address {
            values += [("address.line1", a.line1), ("address.line2", a.line2), ("address.city", a.city),
                       ("address.region", a.region), ("address.postal_code", a.postalCode), ("address.country", a.country)]
        }
        return values.compactMap { key, value in value.map { (key, $0) } }
    }
}

extension FieldMapping {
    /// The CRM fields to send for `contact`: each mapped standard field with a value, in mapping
    /// order; two standard fields mapped to one CRM field (address lines) are joined with ", ".
    public func crmFields(for contact: Contact) -> [(String, String)] {
        let values = Dictionary(contact.standardValues, uniquingKeysWith: { $1 })
        var out: [(String, String)] = []
        for (standard, crmField) in self.contact {
            guard let crmField, let value = values[standard] else { continue }
            if let i = out.firstIndex(where: { $0.0 == crmField }) {
                out[i].1 += ", " + value
            } else {
                out.append((crmField, value))
            }
        }
        return out
    }
}
