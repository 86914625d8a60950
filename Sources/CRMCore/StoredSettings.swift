/// Settings read back from the database, straight from the stored text.
///
/// `GET /crm/list` reads one settings column per integration on every call. Parsing it into a
/// JSON tree and decoding that through a `FieldReader` cost ~3,000 instructions per
/// integration (with three, a sixth of a list). What `POST /crm/connect` stores is a flat object of known
/// keys with booleans, plain strings and the `field_mapping` object, written by jsonb as
/// `{"sync_events": true, "sync_contacts": true}`: this reads exactly that shape in one pass.
/// Anything else (an escape, a non-ASCII byte, a number or null, an unknown or repeated key, a
/// value the settings' checks refuse) goes to the general decoder, so the result is always the
/// same as `fromStored(_ json:for:)`'s.
extension IntegrationSettings {
    public static func fromStored(utf8 bytes: UnsafeBufferPointer<UInt8>, for type: CRMType) -> IntegrationSettings {
        var scanner = StoredSettingsScanner(bytes: bytes, type: type)
        if let settings = scanner.read() { return settings }
        guard let json = try? JSONParser.parse(bytes) else { return .defaults }
        return fromStored(json, for: type)
    }
}

/// The one-pass reader behind `fromStored(utf8:for:)`: nil means "not the plain shape".
struct StoredSettingsScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    let type: CRMType
    var at = 0
    /// The keys seen so far, one bit each (see `Key`): a repeated key is left to the general
    /// decoder, whose rule for repeats differs by field.
    private var seen: UInt16 = 0

    init(bytes: UnsafeBufferPointer<UInt8>, type: CRMType) {
        self.bytes = bytes
        self.type = type
    }

    mutating func read() -> IntegrationSettings? {
        var settings = IntegrationSettings.defaults
        guard take(UInt8(ascii: "{")) else { return nil }
        if take(UInt8(ascii: "}")) { return atEnd() ? settings : nil }
        repeat {
            guard let key = key(), take(UInt8(ascii: ":")) else { return nil }
            let bit: UInt16 = 1 << key.rawValue
            guard seen & bit == 0 else { return nil }
            seen |= bit
            switch key {
            case .syncContacts:
                guard let value = bool() else { return nil }
                settings.syncContacts = value
            case .syncEvents:
                guard let value = bool() else { return nil }
                settings.syncEvents = value
            case .fieldMapping:
                guard let mapping = fieldMapping() else { return nil }
                settings.fieldMapping = mapping
            default:
                // A type-specific key: a non-empty plain string the settings' checks accept.
                guard IntegrationSettings.isSpecific(key.name, for: type), let value = plainString(), !value.isEmpty,
                      value.utf8.count <= 10_000, IntegrationSettings.problem(type: type, key: key.name, value: value) == nil else { return nil }
                settings.specific.append((key.name, .string(value)))
            }
        } while take(UInt8(ascii: ","))
        guard take(UInt8(ascii: "}")), atEnd() else { return nil }
        return settings
    }

    /// The keys settings may have, for any type. A key added to `IntegrationSettings` but not
    /// here is still read right, by the general decoder (`key()` does not know it).
    enum Key: Int {
        case syncContacts, syncEvents, fieldMapping, listID, contactEntity, events, object, apiVersion, externalIDField

        var name: String {
            switch self {
            case .syncContacts: "sync_contacts"
            case .syncEvents: "sync_events"
            case .fieldMapping: "field_mapping"
            case .listID: "list_id"
            case .contactEntity: "contact_entity"
            case .events: "events"
            case .object: "object"
            case .apiVersion: "api_version"
            case .externalIDField: "external_id_field"
            }
        }
    }

    /// Found by length, then compared byte for byte (a generic comparison with each name in
    /// turn cost ~700 instructions a key).
    private mutating func key() -> Key? {
        guard let (start, end) = plainStringBounds() else { return nil }
        let text = UnsafeBufferPointer(rebasing: bytes[start..<end])
        func equals(_ name: StaticString) -> Bool {
            for i in 0..<text.count where text[i] != name.utf8Start[i] { return false }
            return true
        }
        switch text.count {
        case 6: return equals("events") ? .events : equals("object") ? .object : nil
        case 7: return equals("list_id") ? .listID : nil
        case 11: return equals("sync_events") ? .syncEvents : equals("api_version") ? .apiVersion : nil
        case 13: return equals("sync_contacts") ? .syncContacts : equals("field_mapping") ? .fieldMapping : nil
        case 14: return equals("contact_entity") ? .contactEntity : nil
        case 17: return equals("external_id_field") ? .externalIDField : nil
        default: return nil
        }
    }

    /// `{"standard_field": "crm_field", …}` with every target a CRM field name.
    private mutating func fieldMapping() -> [(String, String)]? {
        guard take(UInt8(ascii: "{")) else { return nil }
        var pairs: [(String, String)] = []
        if take(UInt8(ascii: "}")) { return pairs }
        repeat {
            // A repeated field is left to the general decoder too (jsonb never stores one).
            guard let field = plainString(), take(UInt8(ascii: ":")), let target = plainString(),
                  IntegrationSettings.isFieldName(target), !pairs.contains(where: { $0.0 == field }) else { return nil }
            pairs.append((field, target))
        } while take(UInt8(ascii: ","))
        return take(UInt8(ascii: "}")) ? pairs : nil
    }

    private mutating func bool() -> Bool? {
        skipBlanks()
        if matches("true") { return true }
        if matches("false") { return false }
        return nil
    }

    private mutating func plainString() -> String? {
        plainStringBounds().map { String(decoding: UnsafeBufferPointer(rebasing: bytes[$0.0..<$0.1]), as: UTF8.self) }
    }

    /// The bounds of a string's contents when it has only printable ASCII and no escape.
    private mutating func plainStringBounds() -> (Int, Int)? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = at
        while at < bytes.count {
            let b = bytes[at]
            if b == UInt8(ascii: "\"") {
                at += 1
                return (start, at - 1)
            }
            guard b >= 0x20, b < 0x7F, b != UInt8(ascii: "\\") else { return nil }
            at += 1
        }
        return nil
    }

    /// Skips blanks, then consumes `byte` if it comes next.
    private mutating func take(_ byte: UInt8) -> Bool {
        skipBlanks()
        guard at < bytes.count, bytes[at] == byte else { return false }
        at += 1
        return true
    }

    private mutating func matches(_ literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard bytes.count - at >= n else { return false }
        for i in 0..<n where bytes[at + i] != literal.utf8Start[i] { return false }
        at += n
        return true
    }

    private mutating func skipBlanks() {
        while at < bytes.count, bytes[at] == 0x20 || bytes[at] == 0x0A || bytes[at] == 0x0D || bytes[at] == 0x09 { at += 1 }
    }

    private mutating func atEnd() -> Bool {
        skipBlanks()
        return at == bytes.count
    }
}
