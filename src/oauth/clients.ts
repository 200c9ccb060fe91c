/**
 * Compatibility re-exports while src/admin/app.ts and src/oauth/authorize.ts move to the modules
 * these now live in; delete this file once nothing imports it.
 * - validation: client-metadata.ts; the database: client-store.ts; `client_id` → client:
 *   client-resolver.ts; client authentication: client-auth.ts; the admin's client list:
 *   ../admin/client-views.ts.
 */
export { listClients, type ClientView } from '../admin/client-views.ts'
export { authenticateClient, type PresentedClientCredentials } from './client-auth.ts'
export { CLIENT_METADATA_LIMITS, TOKEN_ENDPOINT_AUTH_METHODS, type TokenEndpointAuthMethod } from './client-metadata.ts'
export { ClientResolver, type ClientResolverOptions } from './client-resolver.ts'
export {
  createPreregisteredClient, markClientUsed, registerDynamicClient, registrationResponse, removeClient,
  type PreregisterInput, type RegisteredClient
} from './client-store.ts'
