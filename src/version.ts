import pkg from '../package.json' with { type: 'json' }

/** The server's version, as package.json says (shown by `bus-mcp --version` and in serverInfo). */
export const VERSION: string = pkg.version
