//! tonic's codec for hand-encoded responses: requests are decoded by prost, responses ([`Wire`])
//! write themselves into tonic's buffer, so the bytes are the encoder's, unchanged.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
    Status,
};

use crate::api::encode::{Wire, WireBuf};

impl WireBuf for EncodeBuf<'_> {
    fn reserve(&mut self, additional: usize) {
        EncodeBuf::reserve(self, additional);
    }
}

/// The first buffer tonic allocates for a response stream, kept while the stream lives. tonic's
/// default (8 KiB) was most of an idle subscriber's memory; responses reserve their exact length
/// as they are written, so a small start costs no growth steps.
const STREAM_BUFFER_START: usize = 256;

/// How many bytes of ready responses tonic gathers before it hands them to HTTP/2 (tonic's
/// default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Decodes requests with prost and writes [`Wire`] responses.
pub struct WireCodec<T, Request>(PhantomData<fn() -> (T, Request)>);

impl<T, Request> Default for WireCodec<T, Request> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, Request> Codec for WireCodec<T, Request>
where
    T: Wire + Send + 'static,
    Request: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = Request;
    type Encoder = WireEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<Request>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// [`WireCodec`]'s encoder: the response writes itself (as tonic's `ProstEncoder` has prost write
/// a message).
pub struct WireEncoder<T>(PhantomData<fn(T)>);

impl<T: Wire> Encoder for WireEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(STREAM_BUFFER_START, YIELD_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use futures::future::poll_fn;
    use tonic::codec::{EncodeBody, SingleMessageCompressionOverride};
    use tonic_prost::ProstCodec;
    use tributary_core::{Output, Record};

    use super::*;
    use crate::{
        api::{
            chunker::{Chunk, Chunker},
            convert,
            encode::SubscribeWire,
        },
        pb,
    };

    /// The bytes of a server response stream: each item framed by tonic (flag, length, message).
    async fn stream_bytes<E>(encoder: E, items: Vec<E::Item>) -> Vec<u8>
    where
        E: Encoder<Error = Status> + Send + 'static,
        E::Item: Send + 'static,
    {
        let items = futures::stream::iter(items.into_iter().map(Ok));
        let body = EncodeBody::new_server(encoder, items, None, SingleMessageCompressionOverride::default(), None);
        let mut body = std::pin::pin!(body);
        let mut bytes = Vec::new();
        while let Some(frame) = poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await {
            if let Ok(data) = frame.expect("encoded").into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        bytes
    }

    fn output(offset: i64) -> Output {
        let headers: [(&str, Option<&[u8]>); 1] = [("h", Some(b"v"))];
        Output::untranslated(Record::new("t".into(), 1, offset, 5, Some(b"k"), Some(&[7; 40]), &headers))
    }

    #[tokio::test]
    async fn subscribe_responses_are_the_bytes_prost_writes() {
        let outputs: Vec<Output> = (0..3).map(output).collect();
        let progress = pb::SubscribeResponse {
            message: Some(pb::subscribe_response::Message::Progress(pb::Progress {
                offsets: vec![pb::PartitionOffset { topic: "t".into(), partition: 1, offset: 3 }],
                ..Default::default()
            })),
        };
        let records = pb::SubscribeResponse {
            message: Some(pb::subscribe_response::Message::Records(pb::RecordBatch {
                records: outputs.iter().cloned().map(convert::record).collect(),
            })),
        };
        let written = stream_bytes(
            WireCodec::<SubscribeWire, pb::SubscribeRequest>::default().encoder(),
            vec![SubscribeWire::Records(outputs), SubscribeWire::Message(progress.clone())],
        )
        .await;
        let expected = stream_bytes(
            ProstCodec::<pb::SubscribeResponse, pb::SubscribeRequest>::default().encoder(),
            vec![records, progress],
        )
        .await;
        assert_eq!(written, expected);
    }

    #[tokio::test]
    async fn snapshot_chunks_are_the_bytes_prost_writes() {
        let offsets = vec![pb::PartitionOffset { topic: "t".into(), partition: 1, offset: 9 }];
        let outputs: Vec<Output> = (0..6).map(output).collect();
        let mut chunker = Chunker::new(usize::MAX, offsets.clone());
        assert!(outputs.iter().cloned().all(|o| chunker.push(o).is_none()), "one chunk");
        let expected = pb::SnapshotChunk {
            offsets,
            entries: outputs.into_iter().map(convert::entry).collect(),
            last: true,
            skipped_records: 2,
        };
        let written =
            stream_bytes(WireCodec::<Chunk, pb::GetSnapshotRequest>::default().encoder(), vec![chunker.finish(2)])
                .await;
        let expected =
            stream_bytes(ProstCodec::<pb::SnapshotChunk, pb::GetSnapshotRequest>::default().encoder(), vec![expected])
                .await;
        assert_eq!(written, expected);
    }
}
