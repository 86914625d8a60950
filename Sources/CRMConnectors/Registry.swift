import CRMCore
import HTTPClient

/// The connectors by CRM type. Adding a CRM: one new connector and one line here.
public struct ConnectorRegistry: Sendable {
    private let connectors: [CRMType: any Connector]

    public init(client: HTTPClient, endpoints: CRMEndpoints) {
        let all: [any Connector] = [
            KlaviyoConnector(client: client, endpoints: endpoints),
            SalesforceConnector(client: client, endpoints: endpoints),
            CreatioConnector(client: client),
            HubSpotConnector(client: client, endpoints: endpoints),
        ]
        connectors = Dictionary(uniqueKeysWithValues: all.map { ($0.crmType, $0) })
    }

    public func connector(for type: CRMType) -> any Connector {
        guard let connector = connectors[type] else { preconditionFailure("no connector registered for \(type)") }
        return connector
    }
}
