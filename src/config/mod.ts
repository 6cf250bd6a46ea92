/**
 * Configuration: YAML file -> model configurations and runtime settings.
 *
 * @module
 */
export * from "./config.ts";
export * from "./dims.ts";
