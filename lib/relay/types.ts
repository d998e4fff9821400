/**
 * Types the relay's server and client share, so that neither imports the
 * other.
 *
 * @module
 */

/** How a member encrypts: Fernet (hybrid, the default) or RSA only. */
export type MemberProfile = "hybrid" | "rsa";
