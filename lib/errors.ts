/**
 * Typed errors raised by mcrelay. Callers catch these by class; every message
 * says what went wrong and, where there is one, what to do about it.
 *
 * @module
 */

/** A datagram or reassembled stream that does not follow the wire format (protocol.md sections 2-3). */
export class MalformedDatagramError extends RangeError {
  /**
   * Creates the error.
   * @param message what is wrong with the bytes, e.g. "Cannot decode TLV record: length 900 runs past the end of a 120-byte datagram"
   */
  constructor(message: string) {
    super(message);
    this.name = "MalformedDatagramError";
  }
}

/** Why a Fernet token was rejected. */
export type InvalidTokenReason =
  | "format"
  | "signature"
  | "padding"
  | "expired"
  | "future";

/** A Fernet token that failed a check of the Fernet spec (format, HMAC, padding, age, clock skew). */
export class InvalidTokenError extends Error {
  /** Which check failed. */
  readonly reason: InvalidTokenReason;
  /**
   * Creates the error.
   * @param reason which check failed
   * @param message a sentence for the log
   */
  constructor(reason: InvalidTokenReason, message: string) {
    super(message);
    this.name = "InvalidTokenError";
    this.reason = reason;
  }
}

/** A key (Fernet key text, PEM, PKCS#8, key file) that cannot be used. */
export class InvalidKeyError extends TypeError {
  /**
   * Creates the error.
   * @param message what is wrong with the key and how to fix it
   */
  constructor(message: string) {
    super(message);
    this.name = "InvalidKeyError";
  }
}

/** A configuration value (flag, option) that is out of range or of the wrong form. */
export class ConfigError extends Error {
  /**
   * Creates the error.
   * @param message one line: what is wrong and what to do
   */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The key exchange with the server did not complete (no answer, pinned fingerprint mismatch, bad WELCOME). */
export class HandshakeError extends Error {
  /**
   * Creates the error.
   * @param message what failed and what to check
   */
  constructor(message: string) {
    super(message);
    this.name = "HandshakeError";
  }
}

/** A socket the program listens on could not be bound: the address is in use or not on this machine. */
export class BindError extends Error {
  /**
   * Creates the error.
   * @param message the address, the flag that sets it and the fix, e.g. "control port 127.0.0.1:9000 is in use: choose another with --tcp-port, or 0 for a free one"
   */
  constructor(message: string) {
    super(message);
    this.name = "BindError";
  }
}

/**
 * The server answered with a key the client refuses: not the pinned
 * fingerprint, or not the key its known-servers file records for that
 * address. Retrying does not help; the message says what to check.
 */
export class ServerKeyError extends HandshakeError {
  /**
   * Creates the error.
   * @param message which key came, which was expected, and what to do
   */
  constructor(message: string) {
    super(message);
    this.name = "ServerKeyError";
  }
}

/**
 * Why a message handed to `RelayClient.send` did not reach the server, or may
 * not have: the outbox was full, the client closed before it could send it,
 * or the server stopped answering after it was sent (`unconfirmed`).
 */
export type UndeliveredReason = "outbox_full" | "closed" | "unconfirmed";

/**
 * A message the client could not deliver: the outbox that holds messages
 * while the client is not registered was full, or the client closed before
 * it could send them.
 */
export class UndeliveredError extends Error {
  /** Why the message was not delivered. */
  readonly reason: UndeliveredReason;
  /**
   * Creates the error.
   * @param reason why the message was not delivered
   * @param message what happened and what to do
   */
  constructor(reason: UndeliveredReason, message: string) {
    super(message);
    this.name = "UndeliveredError";
    this.reason = reason;
  }
}

/**
 * A call on a relay client that has stopped: closed by its owner, banned by
 * the server, or stopped by a failure (the message says which).
 */
export class ClientClosedError extends Error {
  /**
   * Creates the error.
   * @param message why the client is closed, e.g. "The client is closed: banned by the server for 600 s: spamming"
   */
  constructor(message: string) {
    super(message);
    this.name = "ClientClosedError";
  }
}

/** Why a send gave up on a message: its signal aborted, or its time ran out. */
export type SendCancelReason = "aborted" | "timeout";

/**
 * A message `RelayClient.send` gave up on while it waited in the outbox (the
 * client was not registered): its signal aborted or its `timeoutMs` passed.
 * The message was not sent and will not be.
 */
export class SendCancelledError extends Error {
  /** Whether the signal aborted or the time ran out. */
  readonly reason: SendCancelReason;
  /**
   * Creates the error.
   * @param reason whether the signal aborted or the time ran out
   * @param message what happened and what to do
   */
  constructor(reason: SendCancelReason, message: string) {
    super(message);
    this.name = "SendCancelledError";
    this.reason = reason;
  }
}

/** A call on a relay server that is stopping or stopped (e.g. `kick` or `ban` after `close`). */
export class ServerClosedError extends Error {
  /**
   * Creates the error.
   * @param message what was asked and why the server cannot do it
   */
  constructor(message: string) {
    super(message);
    this.name = "ServerClosedError";
  }
}
