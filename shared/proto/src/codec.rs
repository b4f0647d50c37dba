//! The protobuf codec of every generated client and server: prost's
//! encoding, and prost's decoding with one difference. A message that cannot
//! be decoded (bytes that are not the message, or messages nested deeper than
//! prost's recursion limit of 100) is answered INVALID_ARGUMENT, naming the
//! problem, instead of prost's INTERNAL: the sender can fix the message, and
//! nothing is wrong with the server.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec as TonicCodec, DecodeBuf, Decoder};

/// Prost encoding and decoding; decode failures are INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> TonicCodec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = Decoding<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoding(PhantomData)
    }
}

/// Decodes `U`; a failure is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct Decoding<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for Decoding<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| undecodable(&e))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// INVALID_ARGUMENT for a message that could not be decoded.
fn undecodable(error: &prost::DecodeError) -> Status {
    Status::invalid_argument(format!(
        "the message could not be decoded ({error}): it is not the method's request message, \
         or it nests messages deeper than 100 levels"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rapport::segmentation::v1::Rule;

    fn decode<U: Message + Default>(bytes: &[u8]) -> Result<U, Status> {
        U::decode(bytes).map_err(|e| undecodable(&e))
    }

    #[test]
    fn undecodable_messages_are_invalid_argument() {
        let status = decode::<Rule>(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("could not be decoded"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn nesting_beyond_the_recursion_limit_is_invalid_argument() {
        let mut rule = Rule::default();
        for _ in 0..150 {
            rule = Rule {
                node: Some(crate::rapport::segmentation::v1::rule::Node::Negate(
                    Box::new(rule),
                )),
            };
        }
        let status = decode::<Rule>(&rule.encode_to_vec()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("recursion"),
            "{}",
            status.message()
        );
    }
}
